"""The gate: modules and limits by plan, one cached lookup per request, and self-hosting."""

from __future__ import annotations

import csv
from datetime import timedelta

import pytest
from flask import g
from flask_login import login_user

from crm.billing import gate, services
from crm.billing.models import UsageRecord
from crm.billing.plans import PLANS
from crm.billing.usage import hour_of, record_campaign_messages
from crm.customers.models import Customer, CustomerImport
from crm.extensions import db
from crm.models import utcnow
from crm.permissions import require
from crm.tenancy import organization_context, set_current_organization
from crm.transaction import commit
from tests.billing.factories import age, invitation_token, overdue, put_on_plan
from tests.customers.factories import make_customer, make_import
from tests.factories import bearer, login, make_org, make_user, run_jobs
from tests.queries import count_queries
from tests.whatsapp.factories import make_profile


@require("campaigns", "read")
def _read_campaigns() -> str:
    return "campaigns"


@require("crm", "write")
def _write_customers() -> str:
    return "written"


@require("billing", "write")
def _write_billing() -> str:
    return "paying"


def _call(app, view, user, path: str, method: str = "GET"):
    """Call a guarded view in a request of its own at `path` (a page, or /api/...), what the
    test wrote committed first, as before a real request."""
    org_id = user.organization_id
    commit()
    with app.test_request_context(path, method=method):
        set_current_organization(org_id)
        login_user(user)
        return view()


def _entitlements(org) -> gate.Entitlements:
    with organization_context(org.id):
        vars(g._get_current_object()).pop("billing_entitlements", None)
        return gate.entitlements()


# -- self-hosted ------------------------------------------------------------------------------

def test_without_a_stripe_key_everything_is_unlocked(app, client, monkeypatch):
    """Self-hosted: an organization long past its trial, over every Free limit, still reaches
    every module and adds what it likes, and the gate asks Redis nothing."""
    org = make_org()
    age(org, 400)
    put_on_plan(org, "free", customers=0)
    reads = _count_entitlement_reads(app, monkeypatch)

    assert _entitlements(org) == gate.UNLOCKED
    assert _call(app, _read_campaigns, org.admin, "/api/campaigns") == "campaigns"
    response = client.post("/api/crm/customers", json={"name": "Huda"}, headers=bearer(org.admin))

    assert response.status_code == 201
    assert reads == []


# -- the trial, then Free -----------------------------------------------------------------------

def test_a_new_organization_is_on_a_trial_of_pro(app, billing_on):
    """Registering starts a 14-day trial of Pro with no card: every module, Pro's limits."""
    org = make_org()

    found = _entitlements(org)

    assert (found.plan, found.status) == ("pro", "trialing")
    assert found.modules == PLANS["pro"].modules
    assert found.limits == dict(PLANS["pro"].limits)
    assert timedelta(days=13, hours=23) < found.trial_ends_at - utcnow() <= timedelta(days=14)


def test_after_the_trial_an_organization_that_did_not_subscribe_is_on_free(app, billing_on):
    """Fifteen days on, with nothing bought: Free, its modules and limits; campaigns and
    ticketing are out of the plan."""
    org = make_org()
    age(org, 15)

    found = _entitlements(org)

    assert (found.plan, found.status) == ("free", "active")
    assert found.limits == dict(PLANS["free"].limits)
    with organization_context(org.id):
        assert gate.allows("crm")
        assert gate.allows("whatsapp")
        assert not gate.allows("campaigns")
        assert not gate.allows("ticketing")


def test_the_cached_trial_expires_when_the_trial_ends(app, billing_on):
    """What a trial grants is cached no longer than the trial lasts, so its end needs no job."""
    org = make_org()
    age(org, 14)
    ends_in = timedelta(minutes=2)
    with organization_context(org.id):
        subscription = services.locked_subscription()
        subscription.trial_ends_at = utcnow() + ends_in
        db.session.flush()

    assert _entitlements(org).plan == "pro"
    ttl = app.extensions["crm.redis"].ttl(gate.entitlements_key(org.id))
    assert 0 < ttl <= ends_in.total_seconds() + 1


# -- modules not in the plan ----------------------------------------------------------------------

def test_a_module_not_in_the_plan_answers_402_on_the_api_and_403_on_pages(app, billing_on):
    """On Free, a campaigns route refuses even the admin: the API with 402 plan_module, a page
    with 403, both saying to upgrade; on Pro the same route is served."""
    org = make_org()
    put_on_plan(org, "free")

    with pytest.raises(gate.ModuleNotInPlanError) as api:
        _call(app, _read_campaigns, org.admin, "/api/campaigns")
    with pytest.raises(gate.ModuleNotInPlanError) as page:
        _call(app, _read_campaigns, org.admin, "/campaigns")

    assert (api.value.status, api.value.code) == (402, "plan_module")
    assert api.value.fields == {"module": "campaigns"}
    assert page.value.status == 403
    assert "رقِّ باقتك" in page.value.message  # "Upgrade your plan", in Arabic (the default)
    put_on_plan(org, "pro")
    assert _call(app, _read_campaigns, org.admin, "/api/campaigns") == "campaigns"


def test_the_navigation_hides_a_module_not_in_the_plan(app, billing_on):
    """`can()` (the sidebar, the dashboard cards) says no to a module the plan lacks."""
    from crm.permissions import can

    org = make_org()
    put_on_plan(org, "free")
    with app.test_request_context("/"):
        set_current_organization(org.id)
        login_user(org.admin)
        assert can("crm", "write")
        assert not can("campaigns", "read")


# -- limits ------------------------------------------------------------------------------------

def test_customers_stop_at_the_limit_with_a_402_naming_it(app, client, billing_on):
    """At the plan's customers, the API answers 402 plan_limit with what is used and allowed,
    and adds nothing; one customer fewer and it adds one."""
    org = make_org()
    put_on_plan(org, "free", customers=2)
    make_customer(org)
    make_customer(org)

    response = client.post("/api/crm/customers", json={"name": "Huda"}, headers=bearer(org.admin))

    assert response.status_code == 402
    assert response.json["error"]["code"] == "plan_limit"
    assert response.json["error"]["fields"] == {"limit": "customers", "used": 2, "allowed": 2}
    put_on_plan(org, "free", customers=3)
    assert client.post("/api/crm/customers", json={"name": "Huda"},
                       headers=bearer(org.admin)).status_code == 201


def test_over_a_limit_after_a_downgrade_nothing_is_deleted_and_the_error_counts_all(
        app, client, billing_on):
    """Five customers on a plan allowing two: all five stay, and the refusal says five (the
    count that stops one past the limit counts in full once over)."""
    org = make_org()
    for _ in range(5):
        make_customer(org)
    put_on_plan(org, "free", customers=2)

    response = client.post("/api/crm/customers", json={"name": "Huda"}, headers=bearer(org.admin))

    assert response.json["error"]["fields"] == {"limit": "customers", "used": 5, "allowed": 2}
    with organization_context(org.id):
        assert gate.usage("customers") == 5


def test_whatsapp_numbers_stop_at_the_limit(app, client, billing_on):
    """Free holds one number: a second is refused with 402 before Meta is asked anything."""
    org = make_org()
    put_on_plan(org, "free")
    make_profile(org, "sandbox")

    response = client.post("/api/whatsapp/profiles", headers=bearer(org.admin),
                           json={"provider": "sandbox", "display_name": "Second"})

    assert response.status_code == 402
    assert response.json["error"]["fields"] == {"limit": "whatsapp_numbers", "used": 1,
                                                "allowed": 1}


def test_users_stop_at_the_limit_on_invitation_and_on_acceptance(app, client, billing_on):
    """Free has two seats: with two active members an invitation is refused (402); an
    invitation sent before the team filled up cannot take a third seat when accepted."""
    from crm.foundation import services as foundation

    org = make_org()
    put_on_plan(org, "free")
    with organization_context(org.id):
        pending = foundation.invite_user(org.admin, "late@example.com", "agent")
        db.session.flush()
    make_user(org, "agent")

    response = client.post("/api/users/invite", headers=bearer(org.admin),
                           json={"email": "new@example.com", "role": "agent"})

    assert response.status_code == 402
    assert response.json["error"]["fields"] == {"limit": "users", "used": 2, "allowed": 2}
    with organization_context(org.id), pytest.raises(gate.PlanLimitError):
        foundation.accept_invitation(invitation_token(pending), "Late Comer",
                                     "long enough password")


def test_campaign_messages_count_this_months_hours_only(app, billing_on):
    """Pro sends 25,000 campaign messages a month: recorded sends count against it, last
    month's do not, and `within` says whether a batch still fits."""
    org = make_org()
    put_on_plan(org, "pro")
    with organization_context(org.id):
        db.session.add(UsageRecord(hour=gate.month_start(utcnow()) - timedelta(hours=1),
                                   campaign_messages=24_000))
        record_campaign_messages(24_000)
        record_campaign_messages(900)
        db.session.flush()

        assert gate.usage("campaign_messages_per_month") == 24_900
        assert gate.within("campaign_messages_per_month", 100)
        assert not gate.within("campaign_messages_per_month", 101)
        with pytest.raises(gate.PlanLimitError) as refused:
            gate.ensure_within("campaign_messages_per_month", 101)
    assert refused.value.fields == {"limit": "campaign_messages_per_month", "used": 24_900,
                                    "allowed": 25_000}
    with organization_context(org.id):
        assert db.session.query(UsageRecord).filter(
            UsageRecord.hour == hour_of(utcnow())).one().campaign_messages == 24_900


def test_the_api_rate_limit_follows_the_plan(app, client, billing_on):
    """Free allows 60 API requests a minute per organization: the 61st answers 429."""
    org = make_org()
    put_on_plan(org, "free", api_requests_per_minute=3)
    headers = bearer(org.admin)

    statuses = [client.get("/api/users/me", headers=headers).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


# -- read-only ---------------------------------------------------------------------------------

def test_a_read_only_organization_reads_but_writes_nothing(app, client, billing_on):
    """Past the grace of an overdue payment: reading works, a write answers 402 read_only on
    the API (403 on pages), and billing itself can still be written, so the admin can pay."""
    org = make_org()
    make_customer(org)
    overdue(org, days=8)
    headers = bearer(org.admin)

    assert client.get("/api/crm/customers", headers=headers).status_code == 200
    response = client.post("/api/crm/customers", json={"name": "Huda"}, headers=headers)

    assert response.status_code == 402
    assert response.json["error"]["code"] == "read_only"
    with pytest.raises(gate.ReadOnlyError) as page:
        _call(app, _write_customers, org.admin, "/customers/new", "POST")
    assert page.value.status == 403
    assert _call(app, _write_billing, org.admin, "/api/billing/portal", "POST") == "paying"


def test_within_the_grace_an_overdue_organization_keeps_writing(app, client, billing_on):
    """Six days overdue of seven: nothing is locked yet."""
    org = make_org()
    overdue(org, days=6)

    response = client.post("/api/crm/customers", json={"name": "Huda"}, headers=bearer(org.admin))

    assert response.status_code == 201
    assert _entitlements(org).changes_at is not None


# -- the cache ---------------------------------------------------------------------------------

def _count_entitlement_reads(app, monkeypatch) -> list[str]:
    """Record every Redis GET of an entitlements key."""
    connection = app.extensions["crm.redis"]
    reads: list[str] = []
    original = connection.get

    def get(name):
        if str(name).startswith("wasl:billing:entitlements:org:"):
            reads.append(name)
        return original(name)

    monkeypatch.setattr(connection, "get", get)
    return reads


def test_a_request_costs_one_cached_lookup_at_most(app, client, billing_on, monkeypatch):
    """An API request asks the gate several times (the rate limit, the route's guard, the
    service's limit) but reads Redis once; the entitlements are computed once for both
    requests, the second finding them cached."""
    org = make_org()
    put_on_plan(org, "pro")
    headers = bearer(org.admin)
    reads = _count_entitlement_reads(app, monkeypatch)
    computed = []
    original = gate.compute
    monkeypatch.setattr(gate, "compute", lambda org_id: computed.append(org_id) or original(
        org_id))

    first = client.post("/api/crm/customers", json={"name": "Huda"}, headers=headers)
    second = client.post("/api/crm/customers", json={"name": "Reem"}, headers=headers)

    assert (first.status_code, second.status_code) == (201, 201)
    assert len(reads) == 2
    assert computed == [org.id]


def test_a_billing_change_is_seen_by_the_next_request(app, client, billing_on):
    """Setting limits deletes the cached entitlements once committed: the next request is
    held to the new limit at once."""
    org = make_org()
    put_on_plan(org, "pro")
    headers = bearer(org.admin)
    assert client.post("/api/crm/customers", json={"name": "Huda"},
                       headers=headers).status_code == 201

    put_on_plan(org, "pro", customers=1)

    assert client.post("/api/crm/customers", json={"name": "Reem"},
                       headers=headers).status_code == 402


def test_pages_work_with_the_gate_when_redis_is_down(app, client, billing_on, monkeypatch):
    """With Redis refusing, the gate reads the database instead: slower, never wrong."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    org = make_org()
    put_on_plan(org, "free")
    connection = app.extensions["crm.redis"]

    def refuse(*args, **kwargs):
        raise RedisConnectionError("Connection refused.")

    monkeypatch.setattr(connection, "get", refuse)
    monkeypatch.setattr(connection, "set", refuse)
    with organization_context(org.id):
        assert gate.entitlements().plan == "free"
    login(client, org.admin)
    assert client.get("/customers/").status_code == 200


def test_an_import_creates_customers_up_to_the_limit_and_reports_the_rest(app, billing_on):
    """A CSV import with room for two more customers creates two; the other new rows are
    rejected in its report with the limit's message, while a row matching a customer already
    there still updates it (it takes no room)."""
    from crm.customers import imports

    org = make_org(language="en")
    put_on_plan(org, "free", customers=3)
    make_customer(org, phone="+966501111111")
    imp = make_import(org, "Name,Mobile\nA,0502222221\nB,0502222222\nC,0502222223\n"
                           "D,0502222224\nOld,0501111111\n")
    with organization_context(org.id):
        imports.configure_import(org.admin, imp, {"Name": "name", "Mobile": "phone"},
                                 "update")
        db.session.flush()
    org_id, imp_id = org.id, imp.id

    run_jobs(app)

    with organization_context(org_id):
        done = db.session.get(CustomerImport, imp_id, populate_existing=True)
        assert (done.created_count, done.updated_count, done.rejected_count) == (2, 1, 2)
        assert gate.usage("customers") == 3
        with open(done.report_path, encoding="utf-8-sig", newline="") as handle:
            rejected = list(csv.reader(handle))[1:]
    assert [row[0] for row in rejected] == ["4", "5"]
    assert all(row[1] == "Customers: 3 of 3 used. Upgrade your plan to add more."
               for row in rejected)


def test_the_customers_limit_is_read_from_the_kept_totals_not_counted(app, billing_on):
    """Checking room for a customer reads the pipeline's totals (kept by triggers: a few rows
    whatever the organization holds), never the customers table, which a bounded count would
    read up to the plan's 100,000 on every new customer. The totals agree with the customers:
    a merged duplicate leaves the count, a new one joins it in the same transaction."""
    org = make_org(language="en")
    put_on_plan(org, "pro")
    first = make_customer(org, phone="+966501111111")
    make_customer(org, phone="+966501111112")
    with organization_context(org.id):
        with count_queries() as statements:
            assert gate.room("customers") == 100_000 - 2
        assert statements
        assert not any("FROM customers" in s for s in statements), statements
        db.session.get(Customer, first.id).merged_into_id = make_customer(
            org, phone="+966501111113").id
        db.session.flush()
        assert gate.usage("customers") == 2
