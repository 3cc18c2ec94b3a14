"""Stripe events, processed once each by a job.

The webhook stores an event (unique per organization by Stripe's id, so a second delivery of
it stores nothing) and enqueues `process_event`. The job locks the event and the
organization's subscription, applies the event and marks it processed in one transaction, so
each event is applied exactly once, whatever RQ runs twice.

Stripe sends events more than once and in any order, and an event's body is a snapshot of its
moment. So the job never applies the snapshot: it reads the subscription (and the invoice)
again from Stripe, which answers with how things stand now, and it does not even do that for
an event older than the newest one applied (`last_event_at`). A late, older event therefore
changes nothing.

A job that fails records the attempt and its error: a moment's trouble (Stripe unreachable)
runs again on RQ's retry schedule; the recovery job (crm/recovery.py) enqueues again what waits
unprocessed with its job lost, up to MAX_ATTEMPTS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from flask import current_app
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from crm import json_input, recovery
from crm.billing import services
from crm.billing.models import StripeEvent, Subscription
from crm.billing.stripe_api import TRANSIENT, client, field
from crm.extensions import db
from crm.foundation.models import User
from crm.jobs import TransientError, enqueue
from crm.mail import send_email
from crm.models import utcnow
from crm.tenancy import current_organization_id
from crm.transaction import commit, rollback

log = logging.getLogger("crm.billing.jobs")

QUEUE = "default"
MAX_ATTEMPTS = 10
# `pending_update_expired`: Stripe dropped an upgrade still unpaid (its `updated` follows).
SUBSCRIPTION_EVENTS = ("customer.subscription.created", "customer.subscription.updated",
                       "customer.subscription.deleted", "customer.subscription.trial_will_end",
                       "customer.subscription.pending_update_expired")
INVOICE_EVENTS = ("invoice.paid", "invoice.payment_failed", "invoice.payment_action_required",
                  "invoice.finalized")
# Invoice events that ask the owner to pay (with the invoice's hosted page).
DUNNING = ("invoice.payment_failed", "invoice.payment_action_required")
# An upgrade's invoice (`pending_if_incomplete`): unpaid, the upgrade waits and the plan paid
# for runs on; nothing is overdue, so no dunning (the admin who upgraded was told on the page).
UPGRADE_REASON = "subscription_update"
HANDLED = ("checkout.session.completed", *SUBSCRIPTION_EVENTS, *INVOICE_EVENTS)


@dataclass(frozen=True)
class ReceivedEvent:
    id: str
    type: str
    created_at: datetime
    customer_id: str | None


def event_job_id(row_id: int) -> str:
    """The RQ job id of an event's processing: the recovery job sees whether it waits."""
    return f"stripe-event-{row_id}"


def store_event(event: ReceivedEvent, body: bytes) -> None:
    """Keep a signed event for the current organization and enqueue its processing; an event
    kept already (Stripe sent it again) is left to its first job."""
    row_id = db.session.execute(insert(StripeEvent).values(
        stripe_event_id=event.id, type=event.type, stripe_created_at=event.created_at,
        payload=body, organization_id=current_organization_id(),
    ).on_conflict_do_nothing(index_elements=["organization_id", "stripe_event_id"])
        .returning(StripeEvent.id)).scalar()
    if row_id is None:
        log.info("Stripe event %s received again: already kept", event.id)
        return
    enqueue(process_event, row_id, queue=QUEUE, job_id=event_job_id(row_id))


def process_event(row_id: int) -> None:
    """Apply one stored event, once (the job)."""
    row = db.session.scalars(select(StripeEvent).where(
        StripeEvent.id == row_id, StripeEvent.processed_at.is_(None))
        .with_for_update(skip_locked=True)).one_or_none()
    if row is None:
        return  # processed already, or being processed by a twin of this job
    try:
        _apply(row, services.locked_subscription())
    except Exception as exc:
        rollback()
        _record_failure(row_id, exc)
        if isinstance(exc, TRANSIENT):
            raise TransientError(str(exc)) from exc
        raise
    row.processed_at = utcnow()
    row.attempts += 1


def _record_failure(row_id: int, exc: Exception) -> None:
    row = db.session.get(StripeEvent, row_id)
    row.attempts += 1
    row.last_error = f"{type(exc).__name__}: {exc}"[:500]
    commit()
    log.warning("Stripe event %s (%s) failed, attempt %d: %s", row.stripe_event_id, row.type,
                row.attempts, row.last_error)


def _apply(row: StripeEvent, subscription: Subscription) -> None:
    event = json_input.loads(row.payload)
    obj = event["data"]["object"]
    older = (subscription.last_event_at is not None
             and row.stripe_created_at < subscription.last_event_at)
    subscription_id = None
    if row.type == "checkout.session.completed":
        if field(obj, "client_reference_id") == str(subscription.organization_id):
            subscription_id = field(obj, "subscription")
        else:
            log.warning("checkout session %s names another organization: ignored", obj["id"])
    elif row.type in SUBSCRIPTION_EVENTS:
        subscription_id = obj["id"]
    else:
        invoice = client().v1.invoices.retrieve(obj["id"])
        services.keep_invoice(invoice)
        subscription_id = _subscription_of(invoice)
        if (row.type in DUNNING and invoice["status"] == "open"
                and field(invoice, "billing_reason") != UPGRADE_REASON):
            _ask_owner_to_pay(invoice, action_required=row.type != "invoice.payment_failed")
    if older:
        log.info("Stripe event %s is older than the last applied: subscription unchanged",
                 row.stripe_event_id)
    elif subscription_id:
        remote = client().v1.subscriptions.retrieve(
            subscription_id, params={"expand": ["default_payment_method"]})
        services.apply_subscription(subscription, remote)
        subscription.last_event_at = row.stripe_created_at


def _subscription_of(invoice) -> str | None:
    """The subscription an invoice bills (API versions from 2025 name it under `parent`)."""
    found = field(field(field(invoice, "parent"), "subscription_details"), "subscription")
    return found if isinstance(found, str) else getattr(found, "id", None)


def _ask_owner_to_pay(invoice, action_required: bool) -> None:
    """Email the organization's owner (its first admin) the invoice's payment page."""
    owner = db.session.scalar(select(User).where(User.role == "admin", User.is_active)
                              .order_by(User.id).limit(1))
    if owner is None or not field(invoice, "hosted_invoice_url"):
        return
    send_email(owner.email, "billing_payment", owner.preferred_language
               or owner.organization.default_language,
               organization=owner.organization, action_required=action_required,
               link=invoice["hosted_invoice_url"],
               # Minor units: halalas (SAR has two decimals, as every plan's currency does).
               amount=Decimal(invoice["amount_due"]) / 100, currency=invoice["currency"].upper(),
               grace_days=current_app.config["BILLING_GRACE_DAYS"])


def recover_events() -> None:
    """Enqueue again the events whose job was lost (a task of the recovery job)."""
    recovery.enqueue_again(
        recovery.stuck("wasl_stripe_events_unprocessed", recovery.queued_before(), MAX_ATTEMPTS),
        f"{__name__}:process_event", QUEUE, event_job_id)

