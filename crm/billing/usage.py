"""Billable usage, counted per organization per hour and reported once to Stripe's meters.

Campaign sends call `record_campaign_messages(n)` in their own transaction (one row per
organization per hour, added to). Each run of the recovery job calls `report_usage()`, which
does something only once an hour has closed: it notes the WhatsApp numbers each paying
organization holds as the hour closed, then sends every closed, unreported hour to Stripe's
Billing Meters (`billing.meter_events`), each event with an identifier made of the
organization, the hour and the meter. Stripe keeps one event per identifier, so an hour sent
again after a crash (sent, but its `reported_at` never committed) is counted once.

Only organizations with a Stripe customer have anything to report; the hours of the others
are marked reported with nothing sent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from crm import recovery
from crm.billing import gate
from crm.billing.models import Subscription, UsageRecord
from crm.billing.plans import METERS
from crm.billing.stripe_api import TRANSIENT, client
from crm.extensions import db
from crm.jobs import redis
from crm.keys import key
from crm.models import utcnow
from crm.tenancy import current_organization_id, organization_context
from crm.transaction import commit, rollback

log = logging.getLogger("crm.billing.usage")


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def record_campaign_messages(n: int = 1) -> None:
    """Count `n` campaign messages sent by the current organization in this hour."""
    _add(hour_of(utcnow()), campaign_messages=n)


def _add(hour: datetime, campaign_messages: int = 0, whatsapp_numbers: int | None = None
         ) -> None:
    row = insert(UsageRecord).values(organization_id=current_organization_id(), hour=hour,
                                     campaign_messages=campaign_messages,
                                     whatsapp_numbers=whatsapp_numbers)
    changes = {"campaign_messages": UsageRecord.campaign_messages + campaign_messages}
    if whatsapp_numbers is not None:
        changes["whatsapp_numbers"] = whatsapp_numbers
    db.session.execute(row.on_conflict_do_update(
        index_elements=["organization_id", "hour"], set_=changes))


def report_usage() -> None:
    """Close the last hour once, then report every closed hour not yet reported (a task of
    the recovery job: cheap when there is nothing to do). Self-hosted, there is no Stripe to
    report to."""
    if not gate.billing_enabled():
        return
    now = utcnow()
    closed = hour_of(now) - timedelta(hours=1)
    if redis().set(key("billing", "usage", "closed", closed.isoformat()), 1, nx=True, ex=7200):
        _note_numbers(closed)
    for org_id, ids in recovery.stuck("wasl_usage_records_unreported", hour_of(now)).items():
        with organization_context(org_id):
            _report(ids)


def _note_numbers(hour: datetime) -> None:
    """Record the WhatsApp numbers each paying organization holds as `hour` closes."""
    after = 0
    while rows := db.session.execute(text(
            "SELECT organization_id, id FROM wasl_subscriptions_paying(:after, :limit)"),
            {"after": after, "limit": recovery.BATCH}).all():
        after = rows[-1].id
        for org_id, _id in rows:
            with organization_context(org_id):
                _add(hour, whatsapp_numbers=gate.usage("whatsapp_numbers"))
                commit()


def _report(ids: list[int]) -> None:
    """Send the organization's closed hours `ids` to Stripe's meters and mark them reported."""
    customer = db.session.scalar(select(Subscription.stripe_customer_id))
    records = db.session.scalars(select(UsageRecord).where(
        UsageRecord.id.in_(ids), UsageRecord.reported_at.is_(None))
        .order_by(UsageRecord.hour).with_for_update(skip_locked=True)).all()
    try:
        for record in records:
            if customer:
                _send(record, customer)
            record.reported_at = utcnow()
    except TRANSIENT as exc:  # the next run sends them again: Stripe keeps one per identifier
        rollback()
        log.warning("usage not reported to Stripe for now: %s", exc)
        return
    commit()


def _send(record: UsageRecord, customer: str) -> None:
    for column, (event_name, _aggregation) in METERS.items():
        value = getattr(record, column)
        if not value:
            continue
        identifier = (f"wasl-{record.organization_id}-{record.hour:%Y%m%dT%H}-"
                      f"{column}")
        client().v1.billing.meter_events.create(params={
            "event_name": event_name, "identifier": identifier,
            "timestamp": int(record.hour.timestamp()),
            "payload": {"stripe_customer_id": customer, "value": str(value)}})
