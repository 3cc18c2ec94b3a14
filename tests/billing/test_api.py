"""The billing API: the plans, the subscription, buying and managing a plan, invoices; who may
do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask_babel import force_locale, gettext

from crm.billing import services
from crm.cli import cli
from crm.models import utcnow
from tests.billing.factories import put_on_plan
from tests.billing.test_stripe import deliver, state
from tests.factories import bearer, login, make_org, make_user


@pytest.fixture
def synced(stripe_api):
    services.sync_catalog()
    return stripe_api


def test_the_plans_are_listed_with_prices_modules_and_limits(app, client, billing_on):
    """GET /api/billing/plans lists the four plans, smallest first, in the issue's shape:
    names in the caller's language, prices in minor units, null for unlimited or not
    sold."""
    org = make_org()

    response = client.get("/api/billing/plans", headers=bearer(org.admin))

    assert response.status_code == 200
    items = response.json["items"]
    assert [plan["code"] for plan in items] == ["free", "starter", "pro", "enterprise"]
    pro = items[2]
    assert pro == {"code": "pro", "name": "الاحترافية", "currency": "sar",
                   "prices": {"month": 29_900, "year": 299_000},
                   "modules": ["whatsapp", "crm", "ticketing", "campaigns"],
                   "limits": {"users": 25, "whatsapp_numbers": 5, "customers": 100_000,
                              "campaign_messages_per_month": 25_000,
                              "api_requests_per_minute": 1_200}}
    assert items[3]["prices"] == {"month": None, "year": None}
    assert set(items[3]["limits"].values()) == {None}


def test_a_new_organization_reads_its_trial_usage_and_limits(app, client, billing_on):
    """GET /api/billing/subscription: the built-in trial of Pro, when it ends, what is used of
    each counted limit and what the plan allows."""
    org = make_org()
    make_user(org, "agent")

    body = client.get("/api/billing/subscription", headers=bearer(org.admin)).json

    assert (body["plan"], body["status"], body["interval"]) == ("pro", "trialing", None)
    assert body["trial_ends_at"] > (utcnow() + timedelta(days=13)).isoformat()
    assert body["usage"] == {"users": 2, "whatsapp_numbers": 0, "customers": 0,
                             "campaign_messages_per_month": 0}
    assert body["limits"]["users"] == 25
    assert (body["read_only"], body["self_hosted"], body["cancel_at_period_end"]) == (
        False, False, False)


def test_self_hosted_the_subscription_says_everything_is_unlocked(app, client):
    """Without Stripe the subscription answers self-hosted, every limit null; buying is a
    409 that says billing is not connected."""
    org = make_org()

    body = client.get("/api/billing/subscription", headers=bearer(org.admin)).json
    refused = client.post("/api/billing/subscribe", headers=bearer(org.admin),
                          json={"plan": "pro", "interval": "month"})

    assert body["self_hosted"] is True
    assert set(body["limits"].values()) == {None}
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "billing_not_connected")


@pytest.mark.parametrize(("role", "reads", "writes"), [
    ("admin", 200, 201), ("manager", 200, 403), ("agent", 403, 403), ("member", 403, 403)])
def test_admins_write_managers_read_agents_and_members_see_nothing(
        app, client, synced, role, reads, writes):
    """The seed's matrix: only admins buy; managers read the plan and invoices."""
    org = make_org()
    user = org.admin if role == "admin" else make_user(org, role)
    headers = bearer(user)

    assert client.get("/api/billing/subscription", headers=headers).status_code == reads
    assert client.get("/api/billing/invoices", headers=headers).status_code == reads
    assert client.post("/api/billing/subscribe", headers=headers,
                       json={"plan": "starter", "interval": "month"}).status_code == writes


def test_subscribing_answers_the_checkout_url_and_the_webhooks_grant_the_plan(
        app, client, synced):
    """POST /api/billing/subscribe → {"checkout_url"}; the plan shows in the subscription
    only once Stripe's webhooks said so; the invoice is listed."""
    org = make_org()
    headers = bearer(org.admin)

    response = client.post("/api/billing/subscribe", headers=headers,
                           json={"plan": "starter", "interval": "year"})

    assert response.status_code == 201
    session = synced.of_kind("checkout.session")[-1]
    assert response.json == {"checkout_url": session["url"]}
    assert client.get("/api/billing/subscription", headers=headers).json["plan"] == "pro"
    deliver(app, client, synced, synced.complete_checkout(session["id"]))
    body = client.get("/api/billing/subscription", headers=headers).json
    assert (body["plan"], body["status"], body["interval"]) == ("starter", "active", "year")
    invoices = client.get("/api/billing/invoices", headers=headers).json
    assert invoices["next_cursor"] is None
    [invoice] = invoices["items"]
    assert (invoice["amount"], invoice["currency"], invoice["status"]) == (99_000, "sar", "paid")
    assert invoice["hosted_invoice_url"].startswith("https://invoice.stripe.test/")
    assert invoice["number"].startswith("WASL-")


def test_a_plan_that_is_not_sold_is_a_422_naming_the_field(app, client, synced):
    """Enterprise is quoted and Free costs nothing: neither is bought through Checkout."""
    org = make_org()

    for body, field in (({"plan": "enterprise", "interval": "month"}, "plan"),
                        ({"plan": "pro", "interval": "week"}, "interval")):
        response = client.post("/api/billing/subscribe", headers=bearer(org.admin), json=body)
        assert response.status_code == 422
        assert field in response.json["error"]["fields"]
    assert synced.calls("POST", "/v1/checkout/sessions") == []


def _subscribed(app, client, synced, plan: str = "starter"):
    org = make_org()
    response = client.post("/api/billing/subscribe", headers=bearer(org.admin),
                           json={"plan": plan, "interval": "month"})
    assert response.status_code == 201
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    return org


def test_changing_plan_and_cancelling_through_the_api(app, client, synced):
    """An upgrade shows at once; a downgrade shows as scheduled; cancelling keeps the plan to
    the period's end; `now` ends it at once, on Free."""
    org = _subscribed(app, client, synced)
    headers = bearer(org.admin)

    up = client.post("/api/billing/change-plan", headers=headers,
                     json={"plan": "pro", "interval": "month"})
    assert (up.status_code, up.json["plan"]) == (200, "pro")
    down = client.post("/api/billing/change-plan", headers=headers,
                       json={"plan": "starter", "interval": "month"})
    assert (down.json["plan"], down.json["scheduled_plan"]) == ("pro", "starter")
    later = client.post("/api/billing/cancel", headers=headers, json={})
    assert (later.json["plan"], later.json["cancel_at_period_end"]) == ("pro", True)
    now = client.post("/api/billing/cancel", headers=headers, json={"now": True})
    assert (now.json["plan"], now.json["status"]) == ("free", "canceled")
    assert client.post("/api/billing/cancel", headers=headers, json={}).status_code == 409


def test_a_plan_ending_at_the_periods_end_is_kept_before_it_changes_through_the_api(
        app, client, synced):
    """Cancelled at the period's end, a change of plan is a 409 saying to keep the plan
    first; once kept, the same change goes through."""
    org = _subscribed(app, client, synced, "pro")
    headers = bearer(org.admin)
    client.post("/api/billing/cancel", headers=headers, json={})

    refused = client.post("/api/billing/change-plan", headers=headers,
                          json={"plan": "starter", "interval": "month"})

    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "conflict"
    with force_locale("ar"):
        assert refused.json["error"]["message"] == gettext(
            "Your plan ends with this period: keep it first, then change it.")
    assert state(org).scheduled_plan is None
    client.post("/api/billing/keep-plan", headers=headers)
    down = client.post("/api/billing/change-plan", headers=headers,
                       json={"plan": "starter", "interval": "month"})
    assert (down.status_code, down.json["scheduled_plan"]) == (200, "starter")


def test_the_payment_method_endpoint_opens_the_portal_on_the_card(app, client, synced):
    """POST /api/billing/payment-method → {"portal_url"}, a portal session of the
    organization's customer opened on updating the card; before any purchase, 409."""
    org = make_org()
    assert client.post("/api/billing/payment-method",
                       headers=bearer(org.admin)).status_code == 409
    org = _subscribed(app, client, synced)

    response = client.post("/api/billing/payment-method", headers=bearer(org.admin))

    assert response.status_code == 201
    session = synced.of_kind("billing_portal.session")[-1]
    assert response.json == {"portal_url": session["url"]}
    call = synced.calls("POST", "/v1/billing_portal/sessions")[-1]
    assert call.params["customer"] == state(org).stripe_customer_id
    assert call.params["flow_data"] == {"type": "payment_method_update"}


def test_invoices_are_paged_newest_first(app, client, synced):
    """Invoices come newest first, a page at a time, with the cursor of the next."""
    org = _subscribed(app, client, synced)
    subscription_id = state(org).stripe_subscription_id
    for _ in range(2):
        deliver(app, client, synced, synced.renew(subscription_id))
    headers = bearer(org.admin)

    first = client.get("/api/billing/invoices?limit=2", headers=headers).json
    second = client.get(f"/api/billing/invoices?limit=2&cursor={first['next_cursor']}",
                        headers=headers).json

    numbers = [invoice["number"] for invoice in first["items"] + second["items"]]
    assert len(numbers) == len(set(numbers)) == 3
    assert second["next_cursor"] is None
    issued = [invoice["issued_at"] for invoice in first["items"] + second["items"]]
    assert issued == sorted(issued, reverse=True)


def test_the_sync_command_creates_the_catalog_once(app, stripe_api):
    """`crm billing sync` says what it created; run again, that Stripe had everything."""
    runner = app.test_cli_runner()

    first = runner.invoke(cli, ["billing", "sync"])
    again = runner.invoke(cli, ["billing", "sync"])

    assert first.exit_code == 0, first.output
    assert "wasl_pro_month" in first.output
    assert again.output.strip() == "Stripe already had everything."


def test_usage_over_a_lowered_limit_is_shown_as_it_is(app, client, billing_on):
    """Usage above a lowered limit is shown as it is: nothing is hidden or deleted."""
    org = make_org()
    make_user(org, "agent")
    make_user(org, "agent")
    put_on_plan(org, "free")

    body = client.get("/api/billing/subscription", headers=bearer(org.admin)).json

    assert (body["usage"]["users"], body["limits"]["users"]) == (3, 2)


def test_keeping_the_plan_through_the_api(app, client, synced):
    """POST /api/billing/keep-plan withdraws a cancellation at the period's end and answers
    the subscription; managers are refused; Stripe down is a 503 that changes nothing;
    without a subscription, 409."""
    assert client.post("/api/billing/keep-plan",
                       headers=bearer(make_org().admin)).status_code == 409
    org = _subscribed(app, client, synced)
    headers = bearer(org.admin)
    client.post("/api/billing/cancel", headers=headers, json={})
    assert client.post("/api/billing/keep-plan",
                       headers=bearer(make_user(org, "manager"))).status_code == 403

    synced.fail_with = 503
    down = client.post("/api/billing/keep-plan", headers=headers)
    synced.fail_with = None
    assert (down.status_code, down.json["error"]["code"]) == (503, "billing_unavailable")
    assert state(org).cancel_at_period_end is True

    kept = client.post("/api/billing/keep-plan", headers=headers)

    assert kept.status_code == 200
    assert (kept.json["plan"], kept.json["cancel_at_period_end"]) == ("starter", False)
    assert state(org).cancel_at_period_end is False


@pytest.mark.parametrize("refusal", ["declines", "requires_action"])
def test_an_upgrade_waiting_on_its_payment_is_in_the_subscription(app, client, synced,
                                                                   refusal):
    """The card declines the upgrade's difference, or its bank asks for 3-D Secure: the plan
    stays, and the subscription answers the upgrade waiting, its invoice's page to pay it,
    whether the bank asks to confirm, and when Stripe drops it; once paid, nothing waits."""
    org = _subscribed(app, client, synced)
    headers = bearer(org.admin)
    setattr(synced, refusal, True)

    up = client.post("/api/billing/change-plan", headers=headers,
                     json={"plan": "pro", "interval": "month"})

    assert up.status_code == 200
    stripe_id = synced.of_kind("subscription")[-1]["id"]
    pending = synced.objects[stripe_id]["pending_update"]
    invoice = synced.of_kind("invoice")[-1]
    expected = {"plan": "starter", "pending_plan": "pro", "pending_interval": "month",
                "pending_invoice_url": invoice["hosted_invoice_url"],
                "pending_requires_action": refusal == "requires_action",
                "pending_expires_at": datetime.fromtimestamp(pending["expires_at"], UTC)
                .strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert {key: up.json[key] for key in expected} == expected
    deliver(app, client, synced, synced.take_events())  # Stripe's webhooks say the same
    shown = client.get("/api/billing/subscription", headers=headers).json
    assert {key: shown[key] for key in expected} == expected

    setattr(synced, refusal, False)
    deliver(app, client, synced, synced.pay_invoice(invoice["id"]))

    paid = client.get("/api/billing/subscription", headers=headers).json
    assert (paid["plan"], paid["pending_plan"], paid["pending_interval"],
            paid["pending_invoice_url"], paid["pending_requires_action"],
            paid["pending_expires_at"]) == ("pro", None, None, None, False, None)


def test_an_upgrade_stripe_drops_unpaid_stops_waiting(app, client, synced):
    """Stripe drops the upgrade still unpaid after about 23 hours: its webhook (a
    `customer.subscription.updated` without `pending_update`) leaves nothing waiting, on the
    API and on the page; the plan is the one paid for."""
    org = _subscribed(app, client, synced)
    headers = bearer(org.admin)
    synced.declines = True
    client.post("/api/billing/change-plan", headers=headers,
                json={"plan": "pro", "interval": "month"})
    deliver(app, client, synced, synced.take_events())
    assert client.get("/api/billing/subscription", headers=headers).json["pending_plan"] == "pro"
    pending = synced.of_kind("subscription")[-1]["pending_update"]

    synced.clock = pending["expires_at"]
    deliver(app, client, synced, synced.expire_pending_updates())

    shown = client.get("/api/billing/subscription", headers=headers).json
    assert (shown["plan"], shown["pending_plan"], shown["pending_invoice_url"],
            shown["pending_expires_at"]) == ("starter", None, None, None)
    login(client, org.admin)
    assert 'id="billing-pending"' not in client.get("/billing").get_data(as_text=True)
