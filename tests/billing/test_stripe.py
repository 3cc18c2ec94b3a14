"""Stripe, end to end against the local fake: the catalog, Checkout, webhooks, plan changes,
cancelling, dunning and the operator's limits."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from types import MappingProxyType

import pytest
from sqlalchemy import func, select

from crm.billing import gate, services
from crm.billing.models import Invoice, PaymentMethod, StripeEvent, Subscription
from crm.billing.plans import PLANS
from crm.billing.webhooks import PATH
from crm.cli import cli
from crm.extensions import db
from crm.foundation.models import AuditEntry, OutboundEmail
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.billing.factories import age, oid
from tests.customers.factories import make_customer
from tests.factories import bearer, delivered_text, make_org, run_jobs


def deliver(app, client, fake, events: list[dict]) -> None:
    """Post each event to the webhook as Stripe would, then run the jobs it enqueued."""
    for event in events:
        body, headers = fake.signed(event)
        response = client.post(PATH, data=body, headers=headers)
        assert response.status_code == 200, response.json
    run_jobs(app)


def state(org) -> Subscription:
    with organization_context(oid(org)):
        db.session.expire_all()
        return db.session.scalars(select(Subscription)).one()


def entitlements(org) -> gate.Entitlements:
    with organization_context(oid(org)):
        return gate.compute(oid(org))


def checkout(org, plan: str = "starter", interval: str = "month") -> str:
    with organization_context(oid(org)):
        url = services.start_checkout(org.admin, plan, interval)
        commit()
    return url


def subscribe(app, client, fake, org, plan: str = "starter", interval: str = "month") -> str:
    """Subscribe `org` through Checkout and the webhooks; its Stripe subscription's id."""
    checkout(org, plan, interval)
    session = fake.of_kind("checkout.session")[-1]
    deliver(app, client, fake, fake.complete_checkout(session["id"]))
    return state(org).stripe_subscription_id


@pytest.fixture
def synced(stripe_api):
    services.sync_catalog()
    return stripe_api


# -- the catalog -------------------------------------------------------------------------------

def test_sync_creates_the_catalog_once(stripe_api, monkeypatch):
    """`crm billing sync` creates a product per plan sold, its prices by lookup key and the
    meters; run again it creates nothing; a price changed here gets a new price that takes the
    lookup key over."""
    created = services.sync_catalog()

    assert sorted(created) == ["wasl_campaign_messages", "wasl_pro_month", "wasl_pro_year",
                               "wasl_starter_month", "wasl_starter_year",
                               "wasl_whatsapp_numbers"]
    prices = {price["lookup_key"]: price for price in stripe_api.of_kind("price")}
    assert prices["wasl_pro_year"]["unit_amount"] == 299_000
    assert prices["wasl_pro_year"]["currency"] == "sar"
    assert prices["wasl_pro_year"]["recurring"]["interval"] == "year"
    assert {product["id"] for product in stripe_api.of_kind("product")} == {"wasl_starter",
                                                                           "wasl_pro"}
    assert services.sync_catalog() == []

    dearer = replace(PLANS["pro"], prices=MappingProxyType({"month": 34_900, "year": 349_000}))
    monkeypatch.setattr(services, "PLANS", {**PLANS, "pro": dearer})
    assert sorted(services.sync_catalog()) == ["wasl_pro_month", "wasl_pro_year"]
    keyed = [price for price in stripe_api.of_kind("price")
             if price["lookup_key"] == "wasl_pro_month"]
    assert [price["unit_amount"] for price in keyed] == [34_900]
    assert len(stripe_api.of_kind("product")) == 2


# -- subscribing ------------------------------------------------------------------------------

def test_subscribing_goes_through_checkout_and_is_granted_by_the_webhooks(app, client, synced):
    """Checkout is opened for the organization's customer (created once), naming the
    organization; nothing is granted until Stripe's webhooks say the subscription runs; then
    the plan, its invoice and the card (brand, last four, expiry) are kept."""
    org = make_org()
    age(org, 20)  # the trial is over: Free

    url = checkout(org, "starter", "year")
    again = checkout(org, "starter", "year")

    session = synced.of_kind("checkout.session")[-1]
    assert url == again == session["url"]
    assert len(synced.of_kind("customer")) == 1
    assert session["customer"] == state(org).stripe_customer_id
    assert session["client_reference_id"] == str(oid(org))
    assert session["metadata"] == {"organization_id": str(oid(org)), "plan": "starter",
                                   "interval": "year"}
    assert session["subscription_data"]["metadata"] == {"organization_id": str(oid(org))}
    created = synced.calls("POST", "/v1/checkout/sessions")
    assert created[0].idempotency_key
    assert created[0].params["success_url"] == "http://localhost/billing?checkout=done"
    assert entitlements(org).plan == "free"

    deliver(app, client, synced, synced.complete_checkout(session["id"]))

    subscription = state(org)
    assert (subscription.plan, subscription.interval, subscription.status) == (
        "starter", "year", "active")
    assert subscription.current_period_end > utcnow() + timedelta(days=360)
    assert (entitlements(org).plan, entitlements(org).modules) == (
        "starter", PLANS["starter"].modules)
    with organization_context(oid(org)):
        invoice = db.session.scalars(select(Invoice)).one()
        card = db.session.scalars(select(PaymentMethod)).one()
    assert (invoice.status, invoice.amount, invoice.currency) == ("paid", 99_000, "sar")
    assert invoice.hosted_invoice_url.startswith("https://invoice.stripe.test/")
    assert (card.brand, card.last4, card.exp_month, card.exp_year, card.is_default) == (
        "visa", "4242", 12, 2030, True)
    with organization_context(oid(org)):
        assert services.list_invoices() == ([invoice], None)
        assert services.default_payment_method() == card
        summary = services.subscription_summary()
        assert (summary["usage"]["users"], summary["limits"]["users"]) == (1, 5)


def test_a_subscribed_organization_changes_plan_instead_of_buying_again(app, client, synced):
    """A second Checkout for a running subscription is refused (409)."""
    org = make_org()
    subscribe(app, client, synced, org)

    with organization_context(oid(org)), pytest.raises(services.ConflictError):
        services.start_checkout(org.admin, "pro", "month")


def test_only_plans_that_are_sold_can_be_bought(app, synced):
    """Free and Enterprise have no Checkout; a made-up interval is refused naming its field."""
    org = make_org()
    for plan, interval, field in (("free", "month", "plan"), ("enterprise", "year", "plan"),
                                  ("pro", "week", "interval")):
        with organization_context(oid(org)), pytest.raises(services.ValidationError) as refused:
            services.start_checkout(org.admin, plan, interval)
        assert field in refused.value.fields
    assert synced.calls("POST", "/v1/checkout/sessions") == []


def test_checkout_and_portal_urls_never_reach_the_logs(app, client, synced, caplog):
    """Session URLs open an organization's billing to whoever holds them: even at DEBUG,
    nothing logs them."""
    org = make_org()
    caplog.set_level(logging.DEBUG)

    urls = [checkout(org)]
    with organization_context(oid(org)):
        urls.append(services.portal_url(org.admin))

    assert all(url.startswith(synced.url) for url in urls)
    assert not [url for url in urls if url in caplog.text]


# -- changing plan, cancelling -------------------------------------------------------------

def test_an_upgrade_applies_now_with_its_difference_invoiced(app, client, synced):
    """Starter to Pro: the subscription's price changes now, prorated and invoiced at once,
    paid before it applies; the organization has Pro's modules at once."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org)

    with organization_context(oid(org)):
        services.change_plan(org.admin, "pro", "month")
        commit()

    update = synced.calls("POST", f"/v1/subscriptions/{stripe_id}")[-1]
    assert update.params["proration_behavior"] == "always_invoice"
    assert update.params["payment_behavior"] == "pending_if_incomplete"
    assert (state(org).plan, entitlements(org).plan) == ("pro", "pro")
    assert "campaigns" in entitlements(org).modules


def test_a_downgrade_waits_for_the_end_of_the_period(app, client, synced):
    """Pro to Starter: Pro stays until the period paid for ends (a subscription schedule),
    shown as scheduled; at renewal Stripe moves the subscription and the webhook says so."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "pro")

    with organization_context(oid(org)):
        services.change_plan(org.admin, "starter", "month")
        commit()

    schedule = synced.of_kind("subscription_schedule")[0]
    assert [phase["items"][0]["price"] for phase in schedule["phases"]] == [
        _price(synced, "wasl_pro_month"), _price(synced, "wasl_starter_month")]
    subscription = state(org)
    assert (subscription.plan, subscription.scheduled_plan) == ("pro", "starter")
    assert entitlements(org).plan == "pro"

    deliver(app, client, synced, synced.renew(stripe_id))

    subscription = state(org)
    assert (subscription.plan, subscription.scheduled_plan) == ("starter", None)
    assert "campaigns" not in entitlements(org).modules


def _price(fake, lookup_key: str) -> str:
    return next(price["id"] for price in fake.of_kind("price")
                if price["lookup_key"] == lookup_key)


def test_choosing_the_current_plan_again_drops_the_waiting_downgrade(app, client, synced):
    """A downgrade scheduled, then the current plan chosen again: the schedule is released
    and nothing will change at renewal."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "pro")
    with organization_context(oid(org)):
        services.change_plan(org.admin, "starter", "month")
        services.change_plan(org.admin, "pro", "month")
        commit()

    assert state(org).scheduled_plan is None
    assert synced.objects[stripe_id]["schedule"] is None
    deliver(app, client, synced, synced.renew(stripe_id))
    assert state(org).plan == "pro"


def test_cancelling_keeps_the_plan_until_the_period_ends_then_free(app, client, synced):
    """Cancel: the plan runs to the end of the period paid for, then the organization is on
    Free; its data stays."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "pro")
    make_customer(org)

    with organization_context(oid(org)):
        services.cancel(org.admin)
        commit()

    assert (state(org).cancel_at_period_end, entitlements(org).plan) == (True, "pro")
    deliver(app, client, synced, synced.renew(stripe_id))
    assert (state(org).status, entitlements(org).plan) == ("canceled", "free")
    with organization_context(oid(org)):
        assert gate.usage("customers") == 1


def test_cancelling_now_ends_the_plan_at_once(app, client, synced):
    """An admin may cancel at once: Free from now on, and a new Checkout is possible."""
    org = make_org()
    subscribe(app, client, synced, org, "pro")

    with organization_context(oid(org)):
        services.cancel(org.admin, now=True)
        commit()

    assert (state(org).status, entitlements(org).plan) == ("canceled", "free")
    assert checkout(org, "starter", "month")


# -- events arrive twice and out of order --------------------------------------------------------

def test_an_event_delivered_twice_is_kept_and_applied_once(app, client, synced):
    """The same event again: 200 for Stripe, no second row, no second job, no second read."""
    org = make_org()
    checkout(org)
    events = synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"])
    deliver(app, client, synced, events)
    reads = len(synced.calls("GET", "/v1/subscriptions/"))

    deliver(app, client, synced, events)

    with organization_context(oid(org)):
        assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 3
        assert db.session.scalar(select(func.count()).select_from(StripeEvent).where(
            StripeEvent.processed_at.is_(None))) == 0
    assert len(synced.calls("GET", "/v1/subscriptions/")) == reads


def test_an_older_event_arriving_late_changes_nothing(app, client, synced):
    """A subscription canceled; then, late, an older event whose snapshot says it is active on
    Pro: the subscription stays canceled and Stripe is not even asked."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "pro")
    stale = synced.event("customer.subscription.updated", synced.objects[stripe_id])
    stale["created"] -= 60
    with organization_context(oid(org)):
        services.cancel(org.admin, now=True)
        commit()
    deliver(app, client, synced, [synced.event("customer.subscription.deleted",
                                               synced.objects[stripe_id])])
    reads = len(synced.calls("GET", "/v1/subscriptions/"))

    deliver(app, client, synced, [stale])

    assert (state(org).status, entitlements(org).plan) == ("canceled", "free")
    assert len(synced.calls("GET", "/v1/subscriptions/")) == reads


def test_the_job_applies_what_stripe_says_now_not_the_events_snapshot(app, client, synced):
    """An update event whose snapshot is stale (the subscription moved on since): the job
    reads the subscription again and applies how it stands now."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "starter")
    event = synced.event("customer.subscription.updated", synced.objects[stripe_id])
    synced.objects[stripe_id]["items"]["data"][0]["price"] = synced.objects[
        _price(synced, "wasl_pro_month")]

    deliver(app, client, synced, [event])

    assert state(org).plan == "pro"


def test_a_checkout_naming_another_organization_is_ignored(app, client, synced):
    """A completed Checkout whose client_reference_id is not the organization its customer
    belongs to grants nothing."""
    org, other = make_org(), make_org()
    checkout(org)
    session = synced.of_kind("checkout.session")[-1]
    session["client_reference_id"] = str(oid(other))
    events = synced.complete_checkout(session["id"])

    deliver(app, client, synced, events[:1])

    assert state(org).stripe_subscription_id is None


# -- the webhook's door ----------------------------------------------------------------------

def test_an_event_not_signed_with_our_secret_answers_400_and_keeps_nothing(app, client, synced):
    """Wrong secret, no signature, a body changed after signing, a signature older than 300
    seconds, no secret configured: each is a 400, and nothing is stored."""
    org = make_org()
    checkout(org)
    event = synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"])[1]
    body, headers = synced.signed(event)
    forged = [
        synced.signed(event, secret="whsec_someone_else"),
        (body, {"Content-Type": "application/json"}),
        (body.replace(b'"active"', b'"trialing"'), headers),
        synced.signed(event, timestamp=int(utcnow().timestamp()) - 301),
        (b"\xff" + body, headers),
    ]
    for forged_body, forged_headers in forged:
        response = client.post(PATH, data=forged_body, headers=forged_headers)
        assert response.status_code == 400
    app.config["STRIPE_WEBHOOK_SECRET"] = ""
    assert client.post(PATH, data=body, headers=headers).status_code == 400

    with organization_context(oid(org)):
        assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_events_we_do_not_handle_or_of_unknown_customers_are_dropped(app, client, synced):
    """Stripe hears 200 (or it would retry for days); nothing is kept."""
    org = make_org()
    checkout(org)
    customer = state(org).stripe_customer_id
    ours = synced.event("customer.updated", {"id": customer, "object": "customer",
                                             "customer": customer})
    unknown = synced.event("invoice.paid", {"id": "in_x", "object": "invoice",
                                            "customer": "cus_not_ours"})

    deliver(app, client, synced, [ours, unknown])

    with organization_context(oid(org)):
        assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 0


# -- dunning -----------------------------------------------------------------------------------

def test_a_failed_payment_emails_the_owner_then_read_only_after_the_grace_then_paid(
        app, client, synced):
    """A renewal fails: past due, the owner is emailed the invoice's payment page; writes go
    on for the grace; past it the organization is read-only; paying restores it at once."""
    org = make_org()
    headers = bearer(org.admin)
    stripe_id = subscribe(app, client, synced, org, "pro")
    events = synced.fail_payment(stripe_id)

    deliver(app, client, synced, events)

    subscription = state(org)
    assert subscription.status == "past_due"
    assert subscription.past_due_since is not None
    invoice = synced.objects[events[0]["data"]["object"]["id"]]
    with organization_context(oid(org)):
        email = db.session.scalars(select(OutboundEmail).where(
            OutboundEmail.subject.contains("دفعة"))).one()
        assert email.to_address == org.admin.email
    assert invoice["hosted_invoice_url"] in delivered_text(email)
    assert client.post("/api/crm/customers", json={"name": "Huda"},
                       headers=headers).status_code == 201

    with organization_context(oid(org)):
        subscription = services.locked_subscription()
        subscription.past_due_since = utcnow() - timedelta(days=7, minutes=1)
        gate.invalidate(oid(org))
        commit()
    refused = client.post("/api/crm/customers", json={"name": "Reem"}, headers=headers)
    assert (refused.status_code, refused.json["error"]["code"]) == (402, "read_only")
    assert client.get("/api/crm/customers", headers=headers).status_code == 200

    deliver(app, client, synced, synced.pay_invoice(invoice["id"]))

    assert state(org).past_due_since is None
    assert client.post("/api/crm/customers", json={"name": "Reem"},
                       headers=headers).status_code == 201


def test_a_payment_the_bank_must_confirm_asks_the_owner_to_confirm_it(app, client, synced):
    """`invoice.payment_action_required` (3-D Secure): the owner is emailed the invoice's
    page to confirm the payment; once paid, a late copy of the event emails nobody."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "pro")
    invoice = synced.fail_payment(stripe_id)[0]["data"]["object"]
    asking = synced.event("invoice.payment_action_required", invoice)

    deliver(app, client, synced, [asking])
    synced.pay_invoice(invoice["id"])
    late = synced.event("invoice.payment_action_required", invoice)
    deliver(app, client, synced, [late])

    with organization_context(oid(org)):
        emails = db.session.scalars(select(OutboundEmail).where(
            OutboundEmail.subject.contains("دفعة"))).all()
    assert len(emails) == 1
    assert emails[0].subject.startswith("أكّد")
    assert invoice["hosted_invoice_url"] in delivered_text(emails[0])


def test_an_event_whose_processing_fails_is_tried_again(app, client, synced):
    """Stripe down while an event is processed: the attempt and its error are recorded and the
    event waits; once Stripe answers, the recovery job applies it."""
    org = make_org()
    checkout(org)
    events = synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"])
    synced.fail_with = 500

    deliver(app, client, synced, events[:1])

    with organization_context(oid(org)):
        kept = db.session.scalars(select(StripeEvent)).one()
        assert (kept.attempts, kept.processed_at) == (1, None)
        assert "APIError" in kept.last_error
    synced.fail_with = None
    with organization_context(oid(org)):
        from crm.billing.jobs import process_event

        process_event(kept.id)
        commit()
    assert state(org).status == "active"


def test_stripe_down_when_subscribing_is_a_503_that_keeps_the_customer(app, synced):
    """Stripe failing after the customer was made: the page hears 503, and the next try
    reuses the same customer."""
    org = make_org()
    with organization_context(oid(org)):
        customer = services._ensure_customer(services.locked_subscription(), org.admin)
        commit()
    synced.fail_with = 503

    with organization_context(oid(org)), pytest.raises(services.BillingUnavailableError) as down:
        services.start_checkout(org.admin, "pro", "month")

    assert down.value.status == 503
    synced.fail_with = None
    checkout(org, "pro", "month")
    assert synced.of_kind("checkout.session")[-1]["customer"] == customer


# -- self-hosted, and the operator --------------------------------------------------------------

def test_self_hosted_has_nothing_to_buy(app, client):
    """Without a key: subscribing says billing is not connected; the webhook refuses all."""
    org = make_org()
    with organization_context(oid(org)), pytest.raises(services.BillingNotConnectedError):
        services.start_checkout(org.admin, "pro", "month")
    assert client.post(PATH, data=b"{}", headers={"Stripe-Signature": "t=1,v1=x"}
                       ).status_code == 400


def test_an_operator_sets_an_organizations_own_limits(app, billing_on):
    """`crm billing set-limits ORG --plan enterprise --users 40 --customers unlimited`: the
    organization is on Enterprise with 40 users; other limits stay the plan's."""
    org = make_org()
    runner = app.test_cli_runner()

    result = runner.invoke(cli, ["billing", "set-limits", org.slug, "--plan", "enterprise",
                                 "--users", "40", "--customers", "unlimited"])

    assert result.exit_code == 0, result.output
    found = entitlements(org)
    assert (found.plan, found.status) == ("enterprise", "active")
    assert found.limits["users"] == 40
    assert found.limits["customers"] is None
    bad = runner.invoke(cli, ["billing", "set-limits", str(oid(org)), "--users", "lots"])
    assert bad.exit_code != 0
    assert "whole number" in bad.output
    assert runner.invoke(cli, ["billing", "set-limits", "no-such-org", "--users", "1"]
                         ).exit_code != 0


# -- keeping the plan after a cancellation -------------------------------------------------------

def _ending_at_the_periods_end(app, client, fake, org) -> str:
    """Subscribe `org` to Pro, then cancel at the period's end (webhooks applied); the
    subscription's id in Stripe."""
    stripe_id = subscribe(app, client, fake, org, "pro")
    with organization_context(oid(org)):
        services.cancel(org.admin)
        commit()
    deliver(app, client, fake, fake.take_events())
    return stripe_id


def _audited(org, action: str) -> int:
    with organization_context(oid(org)):
        return db.session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == action))


def test_keeping_the_plan_withdraws_a_cancellation_and_its_webhook_changes_nothing(
        app, client, synced):
    """Cancelled at the period's end, then kept: Stripe is asked to drop the cancellation
    (`cancel_at_period_end` false), the plan renews at the period's end, the admin's act is
    audited once; the `customer.subscription.updated` Stripe then sends changes nothing."""
    org = make_org()
    stripe_id = _ending_at_the_periods_end(app, client, synced, org)
    assert state(org).cancel_at_period_end is True

    with organization_context(oid(org)):
        services.keep_plan(org.admin)
        commit()

    update = synced.calls("POST", f"/v1/subscriptions/{stripe_id}")[-1]
    assert update.params == {"cancel_at_period_end": "false"}
    assert update.idempotency_key
    remote = synced.objects[stripe_id]
    assert (remote["cancel_at_period_end"], remote["cancel_at"], remote["canceled_at"]) == (
        False, None, None)
    kept = state(org)
    assert (kept.cancel_at_period_end, kept.plan, kept.status) == (False, "pro", "active")
    events = synced.take_events()
    assert [event["type"] for event in events] == ["customer.subscription.updated"]
    period_end = kept.current_period_end

    deliver(app, client, synced, events + events)

    after = state(org)
    assert (after.cancel_at_period_end, after.current_period_end) == (False, period_end)
    assert _audited(org, "billing.plan_kept") == 1
    deliver(app, client, synced, synced.renew(stripe_id))
    assert (state(org).status, entitlements(org).plan) == ("active", "pro")


def test_cancel_keep_and_cancel_again_within_minutes_each_reach_stripe(app, client, synced):
    """Cancel, keep, cancel again in the same ten minutes: the second cancellation is a new
    request for Stripe (not the first's answer replayed by its idempotency key), so Stripe
    and Wasl agree the plan ends."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "pro")

    for act in (services.cancel, services.keep_plan, services.cancel):
        with organization_context(oid(org)):
            act(org.admin)
            commit()

    assert synced.objects[stripe_id]["cancel_at_period_end"] is True
    assert state(org).cancel_at_period_end is True
    keys = [call.idempotency_key
            for call in synced.calls("POST", f"/v1/subscriptions/{stripe_id}")]
    assert len(keys) == len(set(keys)) == 3


def test_keeping_a_plan_nobody_cancelled_asks_nothing_of_stripe(app, client, synced):
    """Nothing to keep (never cancelled, or kept already by a first click): no update is sent
    and nothing is audited; without a subscription it is a conflict."""
    org = make_org()
    with organization_context(oid(org)), pytest.raises(services.ConflictError):
        services.keep_plan(org.admin)
    stripe_id = subscribe(app, client, synced, org, "pro")

    with organization_context(oid(org)):
        services.keep_plan(org.admin)
        commit()

    assert synced.calls("POST", f"/v1/subscriptions/{stripe_id}") == []
    assert _audited(org, "billing.plan_kept") == 0


@pytest.mark.parametrize(("plan", "interval"), [("starter", "month"), ("pro", "year")],
                         ids=["downgrade", "upgrade"])
def test_a_plan_ending_at_the_periods_end_is_kept_before_it_changes(
        app, client, synced, plan, interval):
    """Cancelled at the period's end, an upgrade would be charged now and still end with the
    period, a downgrade would wait for a period that never comes: the change is refused
    (keep the plan first), nothing is asked of Stripe but a read and nothing is audited."""
    org = make_org()
    stripe_id = _ending_at_the_periods_end(app, client, synced, org)
    calls = len(synced.calls("POST", "/v1/"))

    with organization_context(oid(org)), pytest.raises(services.ConflictError) as refused:
        services.change_plan(org.admin, plan, interval)

    assert refused.value.status == 409
    assert len(synced.calls("POST", "/v1/")) == calls
    assert synced.of_kind("subscription_schedule") == []
    assert synced.objects[stripe_id]["cancel_at_period_end"] is True
    after = state(org)
    assert (after.plan, after.interval, after.cancel_at_period_end) == ("pro", "month", True)
    assert _audited(org, "billing.plan_changed") == 0


def test_a_cancellation_made_in_the_portal_is_kept_before_the_plan_changes(app, client, synced):
    """Cancelled in Stripe's portal, its webhook not applied yet: Stripe's word counts, the
    change is refused all the same."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "pro")
    synced.objects[stripe_id]["cancel_at_period_end"] = True
    assert state(org).cancel_at_period_end is False

    with organization_context(oid(org)), pytest.raises(services.ConflictError):
        services.change_plan(org.admin, "starter", "month")

    assert synced.of_kind("subscription_schedule") == []


@pytest.mark.parametrize("status", [503, 400])
def test_stripe_down_or_refusing_to_keep_the_plan_changes_nothing_here(
        app, client, synced, status):
    """Stripe not answering (503) or refusing (400): the admin hears it in words they can act
    on, and the cancellation stays as it was in Wasl, unaudited."""
    org = make_org()
    subscribe(app, client, synced, org, "pro")
    with organization_context(oid(org)):
        services.cancel(org.admin)
        commit()
    synced.fail_with = status

    with organization_context(oid(org)), pytest.raises(
            services.BillingUnavailableError) as refused:
        services.keep_plan(org.admin)

    assert refused.value.status == 503
    synced.fail_with = None
    assert state(org).cancel_at_period_end is True
    assert _audited(org, "billing.plan_kept") == 0


def test_an_upgrade_whose_payment_fails_waits_for_it_without_dunning(app, client, synced):
    """The card declines the difference: Stripe keeps the subscription on Starter with the
    upgrade pending (`pending_if_incomplete`), the open invoice is listed to pay, the owner is
    not threatened with read-only (nothing is overdue: the plan paid for runs on); once the
    invoice is paid, Stripe applies the upgrade and its webhook brings Pro."""
    org = make_org()
    stripe_id = subscribe(app, client, synced, org, "starter")
    synced.declines = True

    with organization_context(oid(org)):
        kept = services.change_plan(org.admin, "pro", "month")
        commit()

    assert (kept.plan, kept.status) == ("starter", "active")
    assert synced.objects[stripe_id]["pending_update"] is not None
    deliver(app, client, synced, synced.take_events())
    assert (state(org).plan, entitlements(org).plan) == ("starter", "starter")
    with organization_context(oid(org)):
        invoice = services.list_invoices()[0][0]
        assert invoice.status == "open"
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail)) == 0

    synced.declines = False
    deliver(app, client, synced, synced.pay_invoice(invoice.stripe_invoice_id))

    assert (state(org).plan, entitlements(org).plan) == ("pro", "pro")
    assert synced.objects[stripe_id]["pending_update"] is None
