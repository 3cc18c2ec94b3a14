"""The campaigns' JSON API: every route, its errors (422 naming the field, 409 outside a
draft or a second start, 412 on a stale edit, 404 for another organization's objects), the
roles that may use it, and the results a finished campaign reports per recipient."""

from __future__ import annotations

import pytest

from crm.campaigns import consent
from crm.extensions import db
from crm.foundation import services as foundation
from crm.tenancy import organization_context
from tests.api import assert_error
from tests.campaigns.factories import (
    ACCOUNT_ID,
    cloud_number,
    drive,
    fresh,
    make_campaign,
    make_template,
    template_message,
)
from tests.customers.factories import make_customer, make_segment
from tests.factories import bearer, make_user
from tests.foundation import ident
from tests.whatsapp.factories import make_profile

CAMPAIGN_FIELDS = {"id", "name", "profile_id", "status", "audience", "message", "scheduled_at",
                   "rate_per_minute", "delay_seconds", "quiet_hours", "pause_reason",
                   "pause_message", "created_by_id", "created_at", "started_at",
                   "finished_at", "version", "edited_by_id", "edited_at"}
RECIPIENT_FIELDS = {"id", "phone", "raw_phone", "customer_id", "state", "reason_code",
                    "reason", "attempts", "provider_message_id", "sent_at", "delivered_at",
                    "read_at", "failed_at", "replied_at"}
COUNTS = {"total", "queued", "sent", "delivered", "read", "replied", "failed", "skipped",
          "unknown"}


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


def _call(client, user, method: str, url: str, **kwargs):
    return client.open(url, method=method, headers={**bearer(user), **kwargs.pop("headers",
                                                                                 {})}, **kwargs)


def _vip_campaign(client, org, number, *people: str) -> dict:
    """A draft made through the API: a template to the customers tagged vip."""
    for phone in people:
        make_customer(org, phone=phone, tags=["vip"])
    response = _call(client, org.admin, "POST", "/api/campaigns", json={
        "name": "Eid offer", "profile_id": ident(number), "audience": {"tag": "vip"},
        "message": template_message("{first_name}", "20%")})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# -- drafting ----------------------------------------------------------------------------------

def test_a_draft_is_created_listed_and_read_back(client, org, number):
    """POST answers the draft as GET does; the list shows it newest first; GET tags it with
    its version."""
    segment = make_segment(org, "Riyadh")
    older = make_campaign(org, number, message=template_message("{name}", "x"))
    response = _call(client, org.admin, "POST", "/api/campaigns", json={
        "name": "حملة العيد", "profile_id": ident(number),
        "audience": {"segment_id": ident(segment)},
        "message": template_message("{name}", "x"),
        "scheduled_at": "2099-05-01T09:00:00+03:00", "rate_per_minute": 120,
        "quiet_hours": ["22:00", "08:00"]})

    assert response.status_code == 201, response.get_json()
    made = response.get_json()
    assert set(made) == CAMPAIGN_FIELDS
    assert made | {"id": 0, "created_at": "", "created_by_id": 0} == made | {
        "id": 0, "created_at": "", "created_by_id": 0, "name": "حملة العيد",
        "profile_id": ident(number), "status": "draft",
        "audience": {"segment_id": ident(segment)},
        "message": {"template": {"name": "spring_offer", "language": "ar",
                                 "parameters": ["{name}", "x"]}},
        "scheduled_at": "2099-05-01T06:00:00Z", "rate_per_minute": 120,
        "delay_seconds": None, "quiet_hours": ["22:00", "08:00"], "pause_reason": None,
        "pause_message": None, "started_at": None, "finished_at": None, "version": 1}
    assert made["created_by_id"] == org.admin.id

    shown = _call(client, org.admin, "GET", f"/api/campaigns/{made['id']}")
    assert shown.get_json() == made
    assert shown.headers["ETag"] == '"1"'
    listed = _call(client, org.admin, "GET", "/api/campaigns").get_json()
    assert [item["id"] for item in listed["items"]] == [made["id"], ident(older)]
    assert listed["next_cursor"] is None


def test_a_text_to_a_cloud_number_is_refused_saying_a_template_is_needed(client, org, number):
    response = _call(client, org.admin, "POST", "/api/campaigns", json={
        "name": "Text", "profile_id": ident(number), "message": {"text": "مرحبا {name}"}})

    error = assert_error(response, 422, "validation_error")
    assert error["fields"]["message"].startswith("يلزم قالب")  # a template is needed


def test_a_text_campaign_on_a_web_number_keeps_its_pauses(client, org):
    """A linked-device number sends text, with the random pause chosen for the campaign."""
    web = make_profile(org, "web")
    customer = make_customer(org)
    response = _call(client, org.admin, "POST", "/api/campaigns", json={
        "name": "Web", "profile_id": ident(web), "audience": {"customer_ids": [ident(customer)]},
        "message": {"text": "أهلا {first_name}"}, "delay_seconds": [10, 30]})

    assert response.status_code == 201, response.get_json()
    assert (response.get_json()["message"], response.get_json()["delay_seconds"]) == (
        {"text": "أهلا {first_name}"}, [10, 30])


OMIT = object()  # the field is left out


@pytest.mark.parametrize(("body", "field"), [
    ({"name": OMIT}, "name"),
    ({"profile_id": OMIT}, "profile_id"),
    ({"profile_id": "1"}, "profile_id"),
    ({"colour": "red"}, "colour"),
    ({"audience": {"segment_id": 1, "tag": "vip"}}, "audience"),
    ({"audience": {"city": "Abha"}}, "audience"),
    ({"audience": {"customer_ids": []}}, "audience"),
    ({"message": {"text": "a", "template": {"name": "spring_offer", "language": "ar"}}},
     "message"),
    ({"message": {"template": {"name": "spring_offer"}}}, "message"),
    ({"scheduled_at": "tomorrow"}, "scheduled_at"),
    ({"rate_per_minute": 0}, "rate_per_minute"),
    ({"delay_seconds": [5]}, "delay_seconds"),
    ({"quiet_hours": ["25:00", "08:00"]}, "quiet_hours"),
])
def test_a_malformed_body_is_422_naming_the_field(client, org, number, body, field):
    body = {key: value for key, value in ({"name": "x", "profile_id": ident(number)}
                                          | body).items() if value is not OMIT}
    response = _call(client, org.admin, "POST", "/api/campaigns", json=body)

    assert field in assert_error(response, 422, "validation_error")["fields"]


@pytest.mark.parametrize(("change", "field"), [
    ({"audience": {"tag": "vip", "segment_id": 1}}, "audience"),
    ({"message": {"template": {"name": "unknown", "language": "ar"}}}, "template"),
    ({"message": {"template": {"name": "spring_offer", "language": "ar",
                               "parameters": ["one"]}}}, "template"),
    ({"message": {"template": {"name": "spring_offer", "language": "ar",
                               "parameters": ["{nickname}", "x"]}}}, "template"),
    ({"scheduled_at": "2001-01-01T00:00:00Z"}, "scheduled_at"),
    ({"delay_seconds": [30, 10]}, "delay_seconds"),
])
def test_what_the_values_mean_is_checked_by_the_services(client, org, number, change, field):
    """A template the number lacks, the wrong number of parameters, an unknown variable, a
    past time, a pause whose shortest is longest: 422 on the field."""
    draft = make_campaign(org, number)
    response = _call(client, org.admin, "PATCH", f"/api/campaigns/{ident(draft)}", json=change)

    assert field in assert_error(response, 422, "validation_error")["fields"]


def test_another_organizations_number_and_segment_are_refused(client, org, other_org, number):
    theirs = make_profile(other_org, "cloud")
    segment = make_segment(other_org)

    response = _call(client, org.admin, "POST", "/api/campaigns", json={
        "name": "x", "profile_id": ident(theirs)})
    assert set(assert_error(response, 422)["fields"]) == {"profile_id"}

    response = _call(client, org.admin, "POST", "/api/campaigns", json={
        "name": "x", "profile_id": ident(number), "audience": {"segment_id": ident(segment)}})
    assert set(assert_error(response, 422)["fields"]) == {"audience"}


def test_a_draft_is_changed_and_deleted_but_not_once_started(client, org, number, graph):
    made = _vip_campaign(client, org, number, "+966505600001")
    url = f"/api/campaigns/{made['id']}"

    changed = _call(client, org.admin, "PATCH", url, json={"name": "Eid", "rate_per_minute": 30},
                    headers={"If-Match": '"1"'})
    assert changed.status_code == 200, changed.get_json()
    assert (changed.get_json()["name"], changed.get_json()["rate_per_minute"],
            changed.get_json()["version"], changed.headers["ETag"]) == ("Eid", 30, 2, '"2"')

    stale = _call(client, org.admin, "PATCH", url, json={"name": "Late"},
                  headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.get_json()["current"]["name"] == "Eid"

    assert _call(client, org.admin, "POST", f"{url}/start").get_json()["status"] == "running"
    assert_error(_call(client, org.admin, "PATCH", url, json={"name": "Late"}), 409)
    assert_error(_call(client, org.admin, "DELETE", url), 409)
    assert _call(client, org.admin, "GET", url).get_json()["name"] == "Eid"

    draft = make_campaign(org, number)
    assert _call(client, org.admin, "DELETE", f"/api/campaigns/{ident(draft)}"
                 ).status_code == 204
    assert_error(_call(client, org.admin, "GET", f"/api/campaigns/{ident(draft)}"), 404)


# -- the lifecycle -----------------------------------------------------------------------------

def test_start_pause_resume_and_the_results_of_each_recipient(app, client, org, number, graph,
                                                              clock):
    """A second start is 409 and sends nobody twice; pause and resume move the status (each
    409 from the wrong one); the results count the funnel and list each person with their
    state and reason, filtered by state and paged."""
    phones = ["+966505600001", "+966505600002", "+966505600003", "+966505600004"]
    made = _vip_campaign(client, org, number, *phones)
    make_customer(org, name="No phone", phone=None, tags=["vip"])
    with organization_context(ident(org)):
        consent.record("opt_out", phones[3], method="manual")
        db.session.flush()
    graph.errors_for = {phones[0].lstrip("+"): 131026}  # they cannot receive it
    url = f"/api/campaigns/{made['id']}"

    started = _call(client, org.admin, "POST", f"{url}/start")
    assert started.status_code == 200
    assert (started.get_json()["status"], started.get_json()["started_at"] is None) == (
        "running", False)
    assert_error(_call(client, org.admin, "POST", f"{url}/start"), 409)
    assert _call(client, org.admin, "POST", f"{url}/pause").get_json() | {"version": 0} == \
        _call(client, org.admin, "GET", url).get_json() | {"version": 0}
    assert _call(client, org.admin, "GET", url).get_json()["pause_reason"] == "manual"
    assert_error(_call(client, org.admin, "POST", f"{url}/pause"), 409)
    assert _call(client, org.admin, "POST", f"{url}/resume").get_json()["status"] == "running"
    assert_error(_call(client, org.admin, "POST", f"{url}/resume"), 409)
    drive(app, clock)

    assert sorted(f"+{body['to']}" for body in graph.sends()) == phones[:3]
    results = _call(client, org.admin, "GET", f"{url}/results").get_json()
    assert results["counts"] == {"total": 5, "queued": 0, "sent": 2, "delivered": 0, "read": 0,
                                 "replied": 0, "failed": 1, "skipped": 2, "unknown": 0}
    assert set(results["items"][0]) == RECIPIENT_FIELDS
    shown = {item["phone"]: (item["state"], item["reason_code"]) for item in results["items"]}
    assert shown == {phones[0]: ("failed", "131026"), phones[1]: ("sent", None),
                     phones[2]: ("sent", None), phones[3]: ("skipped", "opted_out"),
                     None: ("skipped", "no_phone")}
    skipped = _call(client, org.admin, "GET", f"{url}/results?state=skipped").get_json()
    assert {item["reason"] for item in skipped["items"]} == {"ألغى الاشتراك في الحملات",
                                                            "لا يوجد رقم هاتف"}
    assert _call(client, org.admin, "GET", url).get_json()["status"] == "completed"

    seen, cursor = [], ""
    while cursor is not None:
        page = _call(client, org.admin, "GET", f"{url}/results?limit=2&cursor={cursor}"
                     ).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [item["id"] for item in results["items"]]
    assert len(seen) == 5
    assert_error(_call(client, org.admin, "GET", f"{url}/results?state=lost"), 422)


def test_a_cancelled_campaign_skips_whoever_was_left(app, client, org, number, graph, clock):
    made = _vip_campaign(client, org, number, "+966505600011", "+966505600012")
    url = f"/api/campaigns/{made['id']}"
    _call(client, org.admin, "POST", f"{url}/start")

    cancelled = _call(client, org.admin, "POST", f"{url}/cancel")
    drive(app, clock)

    assert (cancelled.status_code, cancelled.get_json()["status"]) == (200, "cancelled")
    assert graph.sends() == []
    assert_error(_call(client, org.admin, "POST", f"{url}/cancel"), 409)
    assert_error(_call(client, org.admin, "POST", f"{url}/start"), 409)


def test_starting_an_incomplete_draft_is_422_and_changes_nothing(client, org, number):
    draft = make_campaign(org, number)
    response = _call(client, org.admin, "POST", f"/api/campaigns/{ident(draft)}/start")

    assert set(assert_error(response, 422)["fields"]) == {"audience", "message"}
    assert fresh(org, draft).status == "draft"


def test_the_list_filters_by_status_and_pages(client, org, number, graph):
    drafts = [make_campaign(org, number) for _ in range(3)]
    running = _vip_campaign(client, org, number, "+966505600021")
    _call(client, org.admin, "POST", f"/api/campaigns/{running['id']}/start")

    only = _call(client, org.admin, "GET", "/api/campaigns?status=running").get_json()
    assert [item["id"] for item in only["items"]] == [running["id"]]
    first = _call(client, org.admin, "GET", "/api/campaigns?status=draft&limit=2").get_json()
    second = _call(client, org.admin, "GET", "/api/campaigns?status=draft&limit=2&cursor="
                   + first["next_cursor"]).get_json()
    assert [item["id"] for item in first["items"] + second["items"]] == [
        ident(draft) for draft in reversed(drafts)]
    assert second["next_cursor"] is None
    assert_error(_call(client, org.admin, "GET", "/api/campaigns?status=sleeping"), 422)


# -- templates ---------------------------------------------------------------------------------

def test_a_numbers_templates_are_listed_and_synced_from_whatsapp(client, org, graph):
    profile = cloud_number(org)
    make_template(org, profile, name="old_offer")
    graph.add_template(ACCOUNT_ID, "welcome", "en", body="Hello {{1}}")
    graph.add_template(ACCOUNT_ID, "eid_offer", "ar", status="PENDING")
    url = f"/api/whatsapp/profiles/{ident(profile)}/templates"

    before = _call(client, org.admin, "GET", url).get_json()
    synced = _call(client, org.admin, "POST", f"{url}/sync")

    assert [item["name"] for item in before["items"]] == ["old_offer"]
    assert synced.status_code == 200, synced.get_json()
    assert [(item["name"], item["language"], item["status"], item["category"])
            for item in synced.get_json()["items"]] == [
        ("eid_offer", "ar", "PENDING", "MARKETING"), ("welcome", "en", "APPROVED", "MARKETING")]
    assert _call(client, org.admin, "GET", url).get_json() == synced.get_json()


def test_only_cloud_numbers_sync_templates(client, org):
    sandbox = make_profile(org, "sandbox")
    response = _call(client, org.admin, "POST",
                     f"/api/whatsapp/profiles/{ident(sandbox)}/templates/sync")

    assert_error(response, 409)


def test_a_refused_sync_is_409_saying_why_and_keeps_the_templates(client, org, graph):
    profile = cloud_number(org)  # the fake Graph API knows nothing of its account
    make_template(org, profile)
    url = f"/api/whatsapp/profiles/{ident(profile)}/templates"

    assert_error(_call(client, org.admin, "POST", f"{url}/sync"), 409)
    assert [item["name"] for item in _call(client, org.admin, "GET", url).get_json()["items"]
            ] == ["spring_offer"]


# -- who may --------------------------------------------------------------------------------

def test_managers_write_campaigns(client, org, number, graph):
    manager = make_user(org, "manager")
    graph.add_template(ACCOUNT_ID, "welcome")
    response = _call(client, manager, "POST", "/api/campaigns", json={
        "name": "By a manager", "profile_id": ident(number)})

    assert response.status_code == 201
    assert _call(client, manager, "POST", f"{_templates(number)}/sync").status_code == 200


def _templates(profile) -> str:
    return f"/api/whatsapp/profiles/{ident(profile)}/templates"


@pytest.mark.parametrize("role", ["agent", "member"])
def test_agents_and_members_see_nothing_of_campaigns(client, org, number, role):
    user = make_user(org, role)
    draft = make_campaign(org, number)
    for method, url in [("GET", "/api/campaigns"), ("POST", "/api/campaigns"),
                        ("GET", f"/api/campaigns/{ident(draft)}"),
                        ("PATCH", f"/api/campaigns/{ident(draft)}"),
                        ("DELETE", f"/api/campaigns/{ident(draft)}"),
                        ("POST", f"/api/campaigns/{ident(draft)}/start"),
                        ("GET", f"/api/campaigns/{ident(draft)}/results"),
                        ("GET", _templates(number)), ("POST", f"{_templates(number)}/sync")]:
        assert_error(_call(client, user, method, url, json={"name": "x"}), 403)
    assert fresh(org, draft).status == "draft"


def test_another_organizations_campaign_is_404_and_untouched(client, org, other_org, graph):
    theirs = make_campaign(other_org, cloud_number(other_org))
    their_number = fresh(other_org, theirs).profile_id
    for method, url in [("GET", f"/api/campaigns/{ident(theirs)}"),
                        ("PATCH", f"/api/campaigns/{ident(theirs)}"),
                        ("DELETE", f"/api/campaigns/{ident(theirs)}"),
                        *[("POST", f"/api/campaigns/{ident(theirs)}/{action}")
                          for action in ("start", "pause", "resume", "cancel")],
                        ("GET", f"/api/campaigns/{ident(theirs)}/results"),
                        ("GET", f"/api/whatsapp/profiles/{their_number}/templates"),
                        ("POST", f"/api/whatsapp/profiles/{their_number}/templates/sync")]:
        assert_error(_call(client, org.admin, method, url, json={"name": "x"}), 404)
    assert fresh(other_org, theirs).name.startswith("Campaign ")
    assert _call(client, org.admin, "GET", "/api/campaigns").get_json()["items"] == []


def test_campaigns_switched_off_answer_404(client, org, number):
    draft = make_campaign(org, number)
    with organization_context(ident(org)):
        foundation.set_module_enabled(org.admin, "campaigns", False)
        db.session.flush()

    for method, url in [("GET", "/api/campaigns"), ("GET", f"/api/campaigns/{ident(draft)}"),
                        ("GET", _templates(number))]:
        assert_error(_call(client, org.admin, method, url), 404)
