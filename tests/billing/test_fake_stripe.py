"""The fake Stripe prorates a price change as Stripe does, so the tests of plan changes prove
something: `create_prorations` (Stripe's default) leaves proration invoice items for the next
invoice, `always_invoice` invoices them at once (and says so by webhook), `none` makes none;
a change of interval starts a new period invoiced at once."""

from __future__ import annotations

import pytest

from crm.billing import services
from crm.billing.stripe_api import client
from tests.billing.fake_stripe import MONTH

START = 1_790_000_000  # a moment in 2026, the fake's clock
HALF = START + MONTH // 2


@pytest.fixture
def subscribed(stripe_api):
    """A customer subscribed to Starter by the month at START, the clock at mid-period."""
    services.sync_catalog()
    stripe_api.clock = START
    customer = client().v1.customers.create(params={"name": "Wasl test"})
    session = client().v1.checkout.sessions.create(params={
        "mode": "subscription", "customer": customer.id,
        "line_items": [{"price": _price("wasl_starter_month"), "quantity": 1}],
        "success_url": "http://localhost/billing", "cancel_url": "http://localhost/billing"})
    stripe_api.complete_checkout(session.id)
    stripe_api.clock = HALF
    return stripe_api, stripe_api.of_kind("subscription")[-1]


def _price(lookup_key: str) -> str:
    return client().v1.prices.list(params={"lookup_keys": [lookup_key]}).data[0].id


def _upgrade(subscription: dict, behavior: str | None, lookup_key: str = "wasl_pro_month"):
    params = {"items": [{"id": subscription["items"]["data"][0]["id"],
                         "price": _price(lookup_key)}]}
    if behavior:
        params["proration_behavior"] = behavior
    return client().v1.subscriptions.update(subscription["id"], params=params)


def test_always_invoice_charges_the_difference_at_once_and_says_so(app, subscribed):
    """Half a month left: a credit for half of Starter, a charge for half of Pro, on one
    invoice finalized and paid now; Stripe's events name it and the updated subscription."""
    fake, subscription = subscribed
    fake.take_events()

    _upgrade(subscription, "always_invoice")

    invoice = fake.of_kind("invoice")[-1]
    lines = invoice["lines"]["data"]
    assert [line["amount"] for line in lines] == [-4_950, 14_950]
    assert all(line["parent"]["subscription_item_details"]["proration"] for line in lines)
    assert (invoice["amount_due"], invoice["status"], invoice["billing_reason"]) == (
        10_000, "paid", "subscription_update")
    events = fake.take_events()
    assert [event["type"] for event in events] == [
        "invoice.created", "invoice.finalized", "invoice.paid",
        "customer.subscription.updated"]
    assert events[2]["data"]["object"]["id"] == invoice["id"]
    assert [item["invoice"] for item in fake.of_kind("invoiceitem")] == [invoice["id"]] * 2


def test_create_prorations_leaves_the_difference_for_the_next_invoice(app, subscribed):
    """Stripe's default: proration items wait, no invoice now; the renewal bills them with
    the new price."""
    fake, subscription = subscribed
    invoices = len(fake.of_kind("invoice"))

    _upgrade(subscription, None)

    assert len(fake.of_kind("invoice")) == invoices
    pending = [item for item in fake.of_kind("invoiceitem") if item["invoice"] is None]
    assert sorted(item["amount"] for item in pending) == [-4_950, 14_950]
    fake.clock = START + MONTH
    fake.renew(subscription["id"])
    renewal = fake.of_kind("invoice")[-1]
    assert renewal["amount_due"] == 29_900 + 10_000
    assert all(item["invoice"] == renewal["id"] for item in pending)


def test_no_proration_changes_the_price_alone(app, subscribed):
    fake, subscription = subscribed
    invoices = len(fake.of_kind("invoice"))

    _upgrade(subscription, "none")

    assert len(fake.of_kind("invoice")) == invoices
    assert fake.of_kind("invoiceitem") == []
    assert subscription["items"]["data"][0]["price"]["lookup_key"] == "wasl_pro_month"


def test_a_new_interval_starts_a_new_period_invoiced_at_once(app, subscribed):
    """Monthly to yearly: the yearly price from now, less the unused half month."""
    fake, subscription = subscribed

    _upgrade(subscription, "always_invoice", "wasl_starter_year")

    item = subscription["items"]["data"][0]
    assert item["current_period_start"] == HALF
    invoice = fake.of_kind("invoice")[-1]
    assert invoice["amount_due"] == 99_000 - 4_950


def _pending_upgrade(subscription: dict):
    return client().v1.subscriptions.update(subscription["id"], params={
        "items": [{"id": subscription["items"]["data"][0]["id"],
                   "price": _price("wasl_pro_month")}],
        "proration_behavior": "always_invoice", "payment_behavior": "pending_if_incomplete"})


def test_a_bank_asking_for_3d_secure_holds_the_update_with_its_intent_requiring_action(
        app, subscribed):
    """The bank asks the card holder to authenticate: the update waits in `pending_update`,
    the invoice stays open, its payment intent (under `payments`, when expanded) is
    `requires_action`, and Stripe says `invoice.payment_action_required`, not a failure."""
    fake, subscription = subscribed
    fake.requires_action = True
    fake.take_events()

    updated = _pending_upgrade(subscription)

    assert updated.pending_update.subscription_items[0].price.lookup_key == "wasl_pro_month"
    assert updated["items"].data[0].price.lookup_key == "wasl_starter_month"
    invoice = client().v1.invoices.retrieve(
        updated.latest_invoice, params={"expand": ["payments.data.payment.payment_intent"]})
    assert invoice.status == "open"
    assert invoice.payments.data[0].payment.payment_intent.status == "requires_action"
    assert "payments" not in client().v1.invoices.retrieve(updated.latest_invoice)
    assert [event["type"] for event in fake.take_events()] == [
        "invoice.created", "invoice.finalized", "invoice.payment_action_required",
        "customer.subscription.updated"]


def test_stripe_drops_a_pending_update_unpaid_at_its_expiry(app, subscribed):
    """About 23 hours on (`expires_at`), Stripe drops the update still unpaid: the
    subscription stays on its price with no `pending_update`, and says so
    (`customer.subscription.pending_update_expired`, then `customer.subscription.updated`);
    paying the invoice afterwards applies nothing."""
    fake, subscription = subscribed
    fake.declines = True
    updated = _pending_upgrade(subscription)
    expires_at = updated.pending_update.expires_at
    assert expires_at == HALF + 23 * 3600

    fake.clock = expires_at - 1
    assert fake.expire_pending_updates() == []
    fake.clock = expires_at
    events = fake.expire_pending_updates()

    assert [event["type"] for event in events] == [
        "customer.subscription.pending_update_expired", "customer.subscription.updated"]
    assert events[1]["data"]["object"]["pending_update"] is None
    fake.pay_invoice(updated.latest_invoice)
    kept = client().v1.subscriptions.retrieve(subscription["id"])
    assert (kept.pending_update, kept["items"].data[0].price.lookup_key) == (
        None, "wasl_starter_month")
