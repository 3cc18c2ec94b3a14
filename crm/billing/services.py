"""Every write of billing: subscribing through Checkout, changing plan, cancelling, the portal,
an operator's limits, and applying what Stripe says.

Stripe calls that a page waits on (a Checkout or portal session, a plan change) are made in the
request, each with an idempotency key, rather than through an outbox: their answer is what
the page shows. Each holds the organization's subscription row locked, so two of them never
cross. Access is provisioned only from what Stripe's API answers (an update's answer, or the
subscription a webhook's job reads again), never from a redirect back from Checkout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import attrgetter

import stripe
from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert

from crm.billing import gate
from crm.billing.models import Invoice, PaymentMethod, Subscription
from crm.billing.plans import (
    INTERVALS,
    LIMITS,
    METERS,
    PLANS,
    TRIAL_PLAN,
    Plan,
    plan_for_lookup_key,
)
from crm.billing.stripe_api import TRANSIENT, client, field, idempotency_key
from crm.errors import ConflictError, ServiceError, ValidationError
from crm.extensions import db
from crm.foundation.models import MODULES, Organization, User
from crm.foundation.services import audit
from crm.models import utcnow
from crm.pagination import keyset_page
from crm.tenancy import current_organization_id
from crm.transaction import keep_on_error

log = logging.getLogger("crm.billing")

# The billing page: Checkout and the Customer Portal send people back to it.
BILLING_PATH = "/billing"
# Statuses of a Stripe subscription that is still running (and so is changed, not bought).
RUNNING = ("active", "trialing", "past_due", "unpaid")


class BillingUnavailableError(ServiceError):
    """Stripe is not set up (`crm billing sync`), or not answering: try again later."""

    status = 503
    code = "billing_unavailable"


class BillingNotConnectedError(ServiceError):
    """No Stripe at all: this Wasl is self-hosted, with nothing to buy (no later will change
    that, so no 503)."""

    status = 409
    code = "billing_not_connected"


# -- the subscription row -----------------------------------------------------------------------

def locked_subscription() -> Subscription:
    """The organization's subscription, locked for this transaction; written (the built-in
    trial from the organization's creation) if it has none yet."""
    org_id = current_organization_id()
    created_at = db.session.scalar(select(Organization.created_at)
                                   .where(Organization.id == org_id))
    db.session.execute(insert(Subscription).values(
        organization_id=org_id, plan=TRIAL_PLAN, status="trialing",
        trial_ends_at=created_at + gate.trial_length(), custom_limits={},
    ).on_conflict_do_nothing(index_elements=["organization_id"]))
    return db.session.scalars(select(Subscription).with_for_update()).one()


def _changed(subscription: Subscription) -> None:
    subscription.updated_at = utcnow()
    gate.invalidate(subscription.organization_id)


# -- checking what is asked ---------------------------------------------------------------------

def _require_billing() -> None:
    if not gate.billing_enabled():
        raise BillingNotConnectedError(_(
            "Billing is not connected: this Wasl is self-hosted, with every module and limit "
            "unlocked."))


def check_plan(plan: object, interval: object) -> tuple[Plan, str]:
    """A plan that can be bought and its interval, or a ValidationError naming the field."""
    fields = {}
    if plan not in PLANS or not PLANS[plan].is_paid:
        fields["plan"] = _("Choose one of the plans that can be bought.")
    if interval not in INTERVALS:
        fields["interval"] = _("Choose monthly or yearly.")
    if fields:
        raise ValidationError(fields)
    return PLANS[plan], interval


@contextmanager
def _calling_stripe() -> Iterator[None]:
    """Say that Stripe failed in words a person can act on; log what it said."""
    try:
        yield
    except TRANSIENT as exc:
        log.warning("Stripe did not answer: %s", exc)
        raise BillingUnavailableError(_(
            "The payment service did not answer. Please try again in a moment.")) from exc
    except stripe.StripeError as exc:
        log.error("Stripe refused a request: %s", exc)
        raise BillingUnavailableError(_(
            "The payment service refused the request. Please contact support.")) from exc


def _price_id(plan: Plan, interval: str) -> str:
    key = plan.lookup_key(interval)
    prices = client().v1.prices.list(params={"lookup_keys": [key], "active": True, "limit": 1})
    if not prices.data:
        log.error("no active Stripe price has the lookup key %s: run `crm billing sync`", key)
        raise BillingUnavailableError(_("This plan cannot be bought yet. Please contact "
                                        "support."))
    return prices.data[0].id


def billing_url(**query: str) -> str:
    """The billing page on PUBLIC_URL (never on the request's Host)."""
    suffix = "&".join(f"{name}={value}" for name, value in query.items())
    return f"{current_app.config['PUBLIC_URL'].rstrip('/')}{BILLING_PATH}" + (
        f"?{suffix}" if suffix else "")


# -- subscribing, changing, cancelling ---------------------------------------------------------

def start_checkout(actor: User, plan: object, interval: object) -> str:
    """A Stripe Checkout session for `plan` billed every `interval`: the URL to send the admin
    to. The plan is granted only when Stripe's webhooks say the subscription runs."""
    _require_billing()
    chosen, interval = check_plan(plan, interval)
    subscription = locked_subscription()
    if subscription.stripe_subscription_id and subscription.status in RUNNING:
        raise ConflictError(_("The organization already has a subscription: change its plan "
                              "instead."))
    with _calling_stripe():
        customer_id = _ensure_customer(subscription, actor)
        params = {
            "mode": "subscription", "customer": customer_id,
            "client_reference_id": str(subscription.organization_id),
            "line_items": [{"price": _price_id(chosen, interval), "quantity": 1}],
            "success_url": billing_url(checkout="done"), "cancel_url": billing_url(),
            "metadata": {"organization_id": str(subscription.organization_id),
                         "plan": chosen.code, "interval": interval},
            "subscription_data": {"metadata": {
                "organization_id": str(subscription.organization_id)}},
        }
        session = client().v1.checkout.sessions.create(
            params=params, options=idempotency_key("checkout", params))
    audit("billing.checkout_started", actor, subscription, plan=chosen.code, interval=interval)
    return session.url


def _ensure_customer(subscription: Subscription, actor: User) -> str:
    """The organization's Stripe customer, created once: its id is kept even when what follows
    fails, so a second try never makes another."""
    if subscription.stripe_customer_id:
        return subscription.stripe_customer_id
    org = actor.organization
    params = {"name": org.name, "email": actor.email,
              "preferred_locales": [org.default_language],
              "metadata": {"organization_id": str(org.id)}}
    customer = client().v1.customers.create(params=params,
                                            options=idempotency_key("customer", params))
    subscription.stripe_customer_id = customer.id
    db.session.flush()
    keep_on_error()
    return customer.id


def _running_subscription() -> Subscription:
    subscription = locked_subscription()
    if not subscription.stripe_subscription_id or subscription.status not in RUNNING:
        raise ConflictError(_("The organization has no subscription yet: choose a plan "
                              "first."))
    return subscription


def change_plan(actor: User, plan: object, interval: object) -> Subscription:
    """Move the subscription to `plan` / `interval`: an upgrade at once, its difference
    invoiced now; a downgrade at the end of the period paid for (a subscription schedule)."""
    _require_billing()
    chosen, interval = check_plan(plan, interval)
    subscription = _running_subscription()
    same = (subscription.plan, subscription.interval) == (chosen.code, interval)
    if same and not subscription.scheduled_plan:
        raise ConflictError(_("The organization is already on this plan."))
    downgrade = not same and not _is_upgrade(subscription, chosen, interval)
    with _calling_stripe():
        remote = client().v1.subscriptions.retrieve(subscription.stripe_subscription_id)
        _refuse_while_ending(remote)
        if same:  # back to the current plan: the downgrade waiting is dropped
            _release_schedule(remote)
            remote = client().v1.subscriptions.retrieve(remote.id)
        elif downgrade:
            remote = _schedule_downgrade(remote, _price_id(chosen, interval), interval)
        else:
            remote = _upgrade(remote, _price_id(chosen, interval))
        apply_subscription(subscription, remote)
    if downgrade:
        subscription.scheduled_plan, subscription.scheduled_interval = chosen.code, interval
    audit("billing.plan_changed", actor, subscription, plan=chosen.code, interval=interval)
    return subscription


def _refuse_while_ending(remote) -> None:
    """A plan cancelled at the period's end (here or in the portal: Stripe's word counts) is
    kept before it changes. Stripe would charge an upgrade now and still end it with the
    period, and a downgrade would wait for a period that never comes; withdrawing the
    cancellation silently would undo the admin's own decision."""
    if field(remote, "cancel_at_period_end"):
        raise ConflictError(_("Your plan ends with this period: keep it first, then change "
                              "it."))


def _is_upgrade(subscription: Subscription, plan: Plan, interval: str) -> bool:
    """Up a plan, or from monthly to yearly on the same one: paid for now."""
    current = PLANS[subscription.plan]
    return (plan.rank, interval == "year") > (current.rank, subscription.interval == "year")


def _upgrade(remote, price_id: str):
    _release_schedule(remote)
    params = {"items": [{"id": remote["items"].data[0].id, "price": price_id}],
              "proration_behavior": "always_invoice",
              # The new plan only once its difference is paid.
              "payment_behavior": "pending_if_incomplete"}
    return client().v1.subscriptions.update(
        remote.id, params=params, options=idempotency_key("upgrade", {"id": remote.id, **params}))


def _schedule_downgrade(remote, price_id: str, interval: str):
    """The current price until the period's end, then `price_id` (a schedule that releases
    the subscription once there)."""
    item = remote["items"].data[0]
    if field(remote, "schedule"):
        schedule = client().v1.subscription_schedules.retrieve(remote["schedule"])
    else:
        schedule = client().v1.subscription_schedules.create(
            params={"from_subscription": remote.id},
            options=idempotency_key("schedule", {"id": remote.id}))
    current = schedule.phases[0]
    params = {"end_behavior": "release", "proration_behavior": "none", "phases": [
        {"items": [{"price": item.price.id, "quantity": 1}],
         "start_date": current.start_date, "end_date": current.end_date},
        {"items": [{"price": price_id, "quantity": 1}],
         "duration": {"interval": interval, "interval_count": 1}},
    ]}
    client().v1.subscription_schedules.update(
        schedule.id, params=params,
        options=idempotency_key("downgrade", {"id": schedule.id, **params}))
    return client().v1.subscriptions.retrieve(remote.id)


def _release_schedule(remote) -> None:
    """Drop a downgrade that waits (the subscription stays as it is now)."""
    if field(remote, "schedule"):
        client().v1.subscription_schedules.release(
            remote["schedule"], options=idempotency_key("release", {"id": remote["schedule"]}))


def cancel(actor: User, now: bool = False) -> Subscription:
    """Cancel at the end of the period paid for, or `now` (the plan ends at once)."""
    _require_billing()
    subscription = _running_subscription()
    with _calling_stripe():
        remote = client().v1.subscriptions.retrieve(subscription.stripe_subscription_id)
        _release_schedule(remote)
        if now:
            remote = client().v1.subscriptions.cancel(
                remote.id, options=idempotency_key("cancel", {"id": remote.id}))
        else:
            remote = _set_cancel_at_period_end(subscription, remote, True)
        apply_subscription(subscription, remote)
    audit("billing.canceled", actor, subscription, now=now)
    return subscription


def keep_plan(actor: User) -> Subscription:
    """Withdraw a cancellation at the period's end (made here or in Stripe's portal): the
    plan renews as before. With none to withdraw (a second click, the portal was quicker),
    Stripe is only read and nothing is audited."""
    _require_billing()
    subscription = _running_subscription()
    with _calling_stripe():
        remote = client().v1.subscriptions.retrieve(subscription.stripe_subscription_id)
        withdrawn = bool(field(remote, "cancel_at_period_end"))
        if withdrawn:
            remote = _set_cancel_at_period_end(subscription, remote, False)
        apply_subscription(subscription, remote)
    if withdrawn:
        audit("billing.plan_kept", actor, subscription)
    return subscription


def _set_cancel_at_period_end(subscription: Subscription, remote, cancel: bool):
    """Ask Stripe to end the subscription at the period's end, or not. The idempotency key
    names the row's last change too: cancel, keep and cancel again within the key's window
    are three requests, where the third would otherwise be answered the first's answer and
    Stripe keep the plan while Wasl shows it ending."""
    params = {"cancel_at_period_end": cancel}
    return client().v1.subscriptions.update(remote.id, params=params, options=idempotency_key(
        "cancel-later" if cancel else "keep",
        {"id": remote.id, "since": subscription.updated_at, **params}))


def portal_url(actor: User, card: bool = False) -> str:
    """A Customer Portal session for the organization's card, invoices and cancellation;
    with `card`, opened on updating the card (the payment method)."""
    _require_billing()
    subscription = locked_subscription()
    if not subscription.stripe_customer_id:
        raise ConflictError(_("The organization has no subscription yet: choose a plan "
                              "first."))
    params = {"customer": subscription.stripe_customer_id, "return_url": billing_url()}
    if card:
        params["flow_data"] = {"type": "payment_method_update"}
    with _calling_stripe():
        session = client().v1.billing_portal.sessions.create(
            params=params, options=idempotency_key("portal", params))
    audit("billing.portal_opened", actor, subscription)
    return session.url


# -- the catalog in Stripe ---------------------------------------------------------------------

def sync_catalog() -> list[str]:
    """Create in the Stripe account what plans.py describes and it lacks: a product per plan
    sold, its prices by lookup key, the usage meters. What exists is left alone, so a second
    run creates nothing; a price whose amount changed here gets a new price that takes its
    lookup key over (Stripe prices cannot change). Returns what was created."""
    _require_billing()
    created = []
    stripe_ = client()
    for plan in PLANS.values():
        if not plan.is_paid:
            continue
        keys = [plan.lookup_key(interval) for interval in INTERVALS]
        current = {price.lookup_key: price for price in stripe_.v1.prices.list(
            params={"lookup_keys": keys, "active": True, "limit": len(keys)}).data}
        stale = [interval for interval in INTERVALS
                 if not _price_matches(current.get(plan.lookup_key(interval)), plan, interval)]
        if stale:
            product = _product(plan)
            for interval in stale:
                _create_price(product, plan, interval)
                created.append(plan.lookup_key(interval))
    meters = {meter.event_name for meter in stripe_.v1.billing.meters.list(
        params={"status": "active", "limit": 100}).data}
    for column, (event_name, aggregation) in METERS.items():
        if event_name not in meters:
            params = {"display_name": f"Wasl {column.replace('_', ' ')}",
                      "event_name": event_name, "default_aggregation": {"formula": aggregation},
                      "customer_mapping": {"type": "by_id",
                                           "event_payload_key": "stripe_customer_id"},
                      "value_settings": {"event_payload_key": "value"}}
            stripe_.v1.billing.meters.create(params=params,
                                             options=idempotency_key("meter", params))
            created.append(event_name)
    return created


def _price_matches(price, plan: Plan, interval: str) -> bool:
    return (price is not None and price.unit_amount == plan.prices[interval]
            and price.currency == plan.currency and price.recurring.interval == interval)


def _product(plan: Plan) -> str:
    """The plan's product (its id is ours: wasl_<plan>), created when missing."""
    product_id = f"wasl_{plan.code}"
    try:
        return client().v1.products.retrieve(product_id).id
    except stripe.InvalidRequestError as exc:
        if exc.code != "resource_missing":
            raise
    params = {"id": product_id, "name": f"Wasl {plan.code.capitalize()}",
              "metadata": {"plan": plan.code}}
    return client().v1.products.create(params=params,
                                       options=idempotency_key("product", params)).id


def _create_price(product_id: str, plan: Plan, interval: str) -> None:
    params = {"product": product_id, "currency": plan.currency,
              "unit_amount": plan.prices[interval], "recurring": {"interval": interval},
              "lookup_key": plan.lookup_key(interval), "transfer_lookup_key": True,
              "metadata": {"plan": plan.code, "interval": interval}}
    client().v1.prices.create(params=params, options=idempotency_key("price", params))


# -- an operator's limits -------------------------------------------------------------------------

def set_limits(limits: Mapping[str, int | None], plan: str | None = None) -> Subscription:
    """Set the current organization's own limits over its plan's (None: unlimited), and with
    `plan` put it on that plan outside Stripe (an Enterprise contract invoiced by hand)."""
    unknown = set(limits) - set(LIMITS)
    if unknown or any(value is not None and (not isinstance(value, int) or value < 0)
                      for value in limits.values()):
        raise ValidationError({"limits": _("Give each limit as a whole number or unlimited.")})
    if plan is not None and plan not in PLANS:
        raise ValidationError({"plan": _("Choose one of the listed options.")})
    subscription = locked_subscription()
    subscription.custom_limits = {**subscription.custom_limits, **limits}
    if plan is not None:
        subscription.plan, subscription.status, subscription.interval = plan, "active", None
    _changed(subscription)
    audit("billing.limits_set", None, subscription, limits=dict(limits), plan=plan)
    return subscription


# -- what Stripe says -----------------------------------------------------------------------------

def _moment(timestamp: int | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def apply_subscription(subscription: Subscription, remote) -> bool:
    """Copy what we know of a Stripe subscription onto the organization's; False when it is
    not the organization's current one (another customer's, or an older one replaced)."""
    if remote["customer"] != subscription.stripe_customer_id:
        log.warning("subscription %s is not of organization %s's customer: ignored",
                    remote.id, subscription.organization_id)
        return False
    if (subscription.stripe_subscription_id not in (None, remote.id)
            and subscription.status in RUNNING):
        log.info("subscription %s replaced by %s: ignored", remote.id,
                 subscription.stripe_subscription_id)
        return False
    item = remote["items"].data[0]
    found = plan_for_lookup_key(field(item.price, "lookup_key"))
    if found is None:
        log.error("subscription %s has a price of no plan (%s): plan unchanged", remote.id,
                  item.price.id)
    else:
        subscription.plan, subscription.interval = found[0].code, found[1]
    subscription.stripe_subscription_id = remote.id
    subscription.status = remote["status"]
    subscription.current_period_end = _moment(field(item, "current_period_end"))
    subscription.cancel_at_period_end = bool(field(remote, "cancel_at_period_end"))
    if field(remote, "trial_end"):
        subscription.trial_ends_at = _moment(remote["trial_end"])
    if remote["status"] in ("past_due", "unpaid"):
        subscription.past_due_since = subscription.past_due_since or utcnow()
    else:
        subscription.past_due_since = None
    if not field(remote, "schedule"):
        subscription.scheduled_plan = subscription.scheduled_interval = None
    _keep_pending(subscription, remote)
    _keep_card(field(remote, "default_payment_method"))
    _changed(subscription)
    return True


def _keep_pending(subscription: Subscription, remote) -> None:
    """Keep the upgrade that waits on its invoice's payment (`pending_update`), or forget it:
    paid, Stripe applied it; unpaid after about 23 hours, Stripe dropped it. Its invoice is
    read with its payment intents: `requires_action` is a bank asking for 3-D Secure, which
    the card holder confirms on the invoice's page, not a card refused."""
    pending = field(remote, "pending_update")
    if not pending:
        subscription.pending_plan = subscription.pending_interval = None
        subscription.pending_invoice_url = subscription.pending_expires_at = None
        subscription.pending_requires_action = False
        return
    found = plan_for_lookup_key(field(pending["subscription_items"][0]["price"], "lookup_key"))
    subscription.pending_plan, subscription.pending_interval = (
        (found[0].code, found[1]) if found else (None, None))
    subscription.pending_expires_at = _moment(field(pending, "expires_at"))
    latest = field(remote, "latest_invoice")
    invoice_id = latest if isinstance(latest, str) else field(latest, "id")
    if invoice_id:
        invoice = client().v1.invoices.retrieve(
            invoice_id, params={"expand": ["payments.data.payment.payment_intent"]})
        keep_invoice(invoice)
        subscription.pending_invoice_url = field(invoice, "hosted_invoice_url")
        subscription.pending_requires_action = any(
            field(field(payment["payment"], "payment_intent"), "status") == "requires_action"
            for payment in field(field(invoice, "payments"), "data") or ())


def _keep_card(method) -> None:
    """Keep the brand, last four digits and expiry of the subscription's card (an expanded
    payment method; an id alone tells nothing)."""
    if not isinstance(method, stripe.StripeObject) or field(method, "type") != "card":
        return
    card = method["card"]
    values = {"brand": field(card, "brand"), "last4": field(card, "last4"),
              "exp_month": field(card, "exp_month"), "exp_year": field(card, "exp_year"),
              "is_default": True}
    db.session.execute(update(PaymentMethod).where(
        PaymentMethod.stripe_payment_method_id != method.id).values(is_default=False))
    db.session.execute(insert(PaymentMethod).values(
        organization_id=current_organization_id(), stripe_payment_method_id=method.id,
        **values).on_conflict_do_update(
        index_elements=["organization_id", "stripe_payment_method_id"], set_=values))


def keep_invoice(remote) -> None:
    """Insert or update the organization's copy of a Stripe invoice."""
    values = {"number": field(remote, "number"), "issued_at": _moment(remote["created"]),
              "amount": remote["amount_due"], "currency": remote["currency"],
              "status": remote["status"],
              "hosted_invoice_url": field(remote, "hosted_invoice_url"),
              "invoice_pdf": field(remote, "invoice_pdf")}
    db.session.execute(insert(Invoice).values(
        organization_id=current_organization_id(), stripe_invoice_id=remote.id,
        **values).on_conflict_do_update(
        index_elements=["organization_id", "stripe_invoice_id"], set_=values))


# -- reading ----------------------------------------------------------------------------------

def list_invoices(after: tuple[datetime, int] | None = None, limit: int = 50
                  ) -> tuple[list[Invoice], tuple[datetime, int] | None]:
    """The organization's invoices, newest first (keyset on issued_at, id)."""
    query = select(Invoice).order_by(Invoice.issued_at.desc(), Invoice.id.desc())
    if after is not None:
        query = query.where(tuple_(Invoice.issued_at, Invoice.id) < tuple_(*after))
    return keyset_page(query, limit, attrgetter("issued_at", "id"))


def open_invoice() -> Invoice | None:
    """The newest invoice still to be paid (the past-due banner links its payment page)."""
    return db.session.scalar(select(Invoice).where(Invoice.status == "open")
                             .order_by(Invoice.issued_at.desc(), Invoice.id.desc()).limit(1))


def has_running_subscription() -> bool:
    """Has the organization a Stripe subscription that runs (so it changes plan, not buys)?"""
    return bool(db.session.scalar(select(Subscription.id).where(
        Subscription.stripe_subscription_id.is_not(None), Subscription.status.in_(RUNNING))))


def has_stripe_customer() -> bool:
    """Is the organization a customer in Stripe (its portal keeps the invoices and the card,
    even once a subscription has ended)?"""
    return bool(db.session.scalar(select(Subscription.id).where(
        Subscription.stripe_customer_id.is_not(None))))


def default_payment_method() -> PaymentMethod | None:
    return db.session.scalar(select(PaymentMethod).where(PaymentMethod.is_default))


COUNTED = tuple(limit for limit in LIMITS if limit != "api_requests_per_minute")
# An upgrade waiting on its payment, as the subscription's summary shows it.
PENDING = ("pending_plan", "pending_interval", "pending_invoice_url", "pending_expires_at")


def subscription_summary() -> dict:
    """The organization's subscription as the API and the billing page show it: its
    entitlements, with what it uses of each counted limit."""
    found = gate.entitlements()
    row = db.session.scalar(select(Subscription))
    return {**{name: getattr(found, name) for name in (
        "plan", "status", "interval", "trial_ends_at", "current_period_end",
        "cancel_at_period_end", "scheduled_plan", "read_only", "self_hosted", "limits")},
        **{name: getattr(row, name) if row else None for name in PENDING},
        "pending_requires_action": bool(row and row.pending_requires_action),
        "usage": {limit: gate.usage(limit) for limit in COUNTED}}


def plan_catalog() -> list[dict]:
    """The plans, smallest first, as the API and the billing page list them."""
    return [{"code": plan.code, "name": str(plan.name), "currency": plan.currency,
             "prices": dict(plan.prices),
             "modules": [module for module in MODULES if module in plan.modules],
             "limits": dict(plan.limits)}
            for plan in sorted(PLANS.values(), key=attrgetter("rank"))]
