"""The CRM's JSON API: every endpoint, its errors (409 naming the duplicate, 422 with field
errors, 404 for another organization's objects), permissions and keyset pages."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from flask_babel import force_locale, gettext
from sqlalchemy import select

from crm.customers import services
from crm.customers.models import Customer
from crm.extensions import db
from crm.tenancy import organization_context
from tests.api import assert_error, walk_pages
from tests.customers.factories import (
    make_customer,
    make_field,
    make_message_activity,
    make_segment,
    make_stage,
)
from tests.factories import bearer, make_user
from tests.foundation import ident
from tests.queries import count_queries
from tests.whatsapp.factories import make_conversation, make_profile

CUSTOMER_FIELDS = {"id", "name", "phone", "email", "company", "owner_id", "stage_id",
                   "expected_value", "tags",
                   "source", "custom_fields", "notes", "score", "score_explanation",
                   "last_contacted_at", "created_at", "updated_at", "version", "edited_by_id",
                   "edited_at"}


def _stages(org) -> list:
    with organization_context(ident(org)):
        return services.list_stages()


def _get(client, user, url: str):
    return client.get(url, headers=bearer(user))


# -- the list ----------------------------------------------------------------------------------

def test_the_list_filters_with_query_parameters(client, org):
    """Search (a phone in Arabic digits here), stage, tag, owner, source, score and custom
    fields filter as the list page does; an agent may read."""
    stages = _stages(org)
    make_field(org, "city")
    seller = make_user(org, "manager")
    wanted = make_customer(org, name="مُنى", phone="+966501234567", stage_id=stages[1].id,
                           tags=["vip"], owner_id=seller.id, custom_fields={"city": "Abha"})
    make_customer(org, name="Other", tags=["vip"])
    agent = make_user(org, "agent")

    for query in (f"search={quote('٠٥٠١٢٣٤٥٦٧')}", f"search={quote('منى')}",
                  f"stage_id={stages[1].id}&tag=vip", f"owner_id={seller.id}",
                  "cf_city=Abha", "source=manual&score_min=0&score_max=10&tag=vip&search=501"):
        body = _get(client, agent, f"/api/crm/customers?{query}").get_json()
        assert [item["id"] for item in body["items"]] == [wanted.id], query
        assert set(body["items"][0]) == CUSTOMER_FIELDS
    assert len(_get(client, agent, "/api/crm/customers?tag=vip").get_json()["items"]) == 2


@pytest.mark.parametrize("query", ["stage_id=", "stage_id=abc", "score_min=1.5", "sort=random",
                                   "source=fax", "cf_unknown=1", "limit=0", "cursor=nope",
                                   f"search={'x' * 201}"])
def test_bad_list_parameters_answer_422_naming_the_parameter(client, org, query):
    response = _get(client, org.admin, f"/api/crm/customers?{query}")
    error = assert_error(response, 422, "validation_error")
    assert set(error["fields"]) == {query.split("=")[0]}


def test_the_list_pages_with_a_cursor(client, org):
    """limit=2 walks every customer once, in the chosen order, over several pages."""
    made = [make_customer(org, name=name) for name in ("Dalia", "Badr", "Camil", "Amal", "Eid")]
    pages = walk_pages(client, "/api/crm/customers?sort=name&limit=2", bearer(org.admin))
    assert len(pages) == 3
    assert [item["name"] for items in pages for item in items] == sorted(c.name for c in made)


def test_the_list_runs_the_same_queries_for_few_or_many_customers(client, org):
    """No query per row: a page of 12 customers (with owners and stages) costs what a page
    of 2 costs, and the request asks nothing twice: the caller's session load also reads
    which modules are switched on, and the page reads the customers table alone."""
    headers = bearer(org.admin)
    owner = make_user(org, "manager")
    for _n in range(2):
        make_customer(org, owner_id=owner.id)
    client.get("/api/crm/customers", headers=headers)  # warm-up
    with count_queries() as few:
        assert len(client.get("/api/crm/customers", headers=headers).get_json()["items"]) == 2
    for _n in range(10):
        make_customer(org, owner_id=make_user(org, "manager").id)
    with count_queries() as many:
        assert len(client.get("/api/crm/customers", headers=headers).get_json()["items"]) == 12
    assert len(many) == len(few)
    assert len(few) == 2, few  # the caller with the module switches, one page
    assert "JOIN" not in few[-1]  # the answer names owner and stage by id: no join needed


@pytest.mark.parametrize("language", ["ar", "en"])
def test_the_list_explains_scores_in_the_callers_language(client, org, language):
    """Each line of a listed customer's score explanation is in the caller's language,
    its numbers in place."""
    customer = make_customer(org)
    with organization_context(ident(org)):
        customer.score_breakdown = [{"points": -30, "reason": "decay", "detail": {"days": 400}},
                                    {"points": 20, "reason": "replied_recently",
                                     "detail": {"days": 7}}]
        org.admin.preferred_language = language
        db.session.flush()
    [item] = client.get("/api/crm/customers", headers=bearer(org.admin)).get_json()["items"]
    with force_locale(language):
        expected = [f"-30 {gettext('no contact for %(days)d days', days=400)}",
                    f"+20 {gettext('replied on WhatsApp in the last %(days)d days', days=7)}"]
    assert item["score_explanation"] == expected
    assert (language == "ar") == (expected[0] != "-30 no contact for 400 days")


def test_the_list_reads_only_the_columns_it_answers(client, org):
    """The page reads the columns the answer shows (its rows answered as they are), not
    those it never shows: the board position, the search columns, the merge link."""
    make_customer(org)
    with count_queries() as statements:
        assert client.get("/api/crm/customers", headers=bearer(org.admin)).status_code == 200
    page = statements[-1]
    assert "customers.score_breakdown" in page  # the explanations are written from it
    for unanswered in ("board_position", "search_name", "search_phone", "merged_into_id,"):
        assert f"customers.{unanswered}" not in page, page


# -- one customer -----------------------------------------------------------------------------

def test_create_answers_201_with_the_customer(client, org):
    """The phone in any written form is stored in E.164; the source is `api`; the caller
    owns the customer."""
    response = client.post("/api/crm/customers", headers=bearer(org.admin), json={
        "name": "ليلى", "phone": "٠٥٥ ١٢٣ ٤٥٦٧", "email": "Layla@Example.com",
        "tags": ["vip"], "custom_fields": {}})

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == CUSTOMER_FIELDS
    assert (body["phone"], body["email"], body["source"]) == ("+966551234567",
                                                             "layla@example.com", "api")
    assert body["owner_id"] == ident(org.admin)
    assert body["stage_id"] == _stages(org)[0].id


def test_a_duplicate_phone_answers_409_naming_the_existing_customer(client, org):
    existing = make_customer(org, name="سالم", phone="+966501234567")

    response = client.post("/api/crm/customers", headers=bearer(org.admin),
                           json={"name": "Copy", "phone": "+966 50 123 4567"})

    error = assert_error(response, 409, "conflict")
    assert re.search(rf"\b{existing.id}\b", error["message"])
    assert "سالم" in error["message"]
    assert set(error["fields"]) == {"phone"}
    with organization_context(ident(org)):
        assert db.session.scalar(select(Customer.id).where(Customer.name == "Copy")) is None


@pytest.mark.parametrize(("body", "fields"), [
    ({"name": ""}, {"name"}),
    ({"name": "A", "phone": "123"}, {"phone"}),
    ({"name": "A", "email": "nope", "company": 5}, {"company"}),
    ({"name": "A", "email": "nope"}, {"email"}),
    ({"name": "A", "tags": "a,b"}, {"tags"}),
    ({"name": "A", "owner_id": "1"}, {"owner_id"}),
    ({"name": "A", "owner_id": 999_999_999}, {"owner_id"}),
    ({"name": "A", "custom_fields": {"nope": 1}}, {"cf_nope"}),
    ({"name": "A\x00"}, {"name"}),
])
def test_invalid_fields_answer_422_with_the_field_errors(client, org, body, fields):
    response = client.post("/api/crm/customers", headers=bearer(org.admin), json=body)
    assert set(assert_error(response, 422, "validation_error")["fields"]) == fields


def test_show_update_and_delete(client, org):
    """GET answers the customer; PATCH changes only what it sends (a new stage_id moves the
    customer and logs it); DELETE answers 204, and the customer is gone."""
    customer = make_customer(org, company="Old")
    stage = _stages(org)[3]
    headers = bearer(org.admin)
    url = f"/api/crm/customers/{customer.id}"

    assert client.get(url, headers=headers).get_json()["company"] == "Old"
    patched = client.patch(url, headers=headers, json={"stage_id": stage.id, "notes": "Hi"})
    assert patched.status_code == 200
    assert (patched.get_json()["stage_id"], patched.get_json()["company"]) == (stage.id, "Old")
    timeline = client.get(f"{url}/activities", headers=headers).get_json()["items"]
    assert timeline[0]["type"] == "stage_changed"
    assert timeline[0]["data"]["to_stage_id"] == stage.id

    assert client.delete(url, headers=headers).status_code == 204
    assert_error(client.get(url, headers=headers), 404, "not_found")


def test_an_update_to_anothers_email_answers_409_and_changes_nothing(client, org):
    make_customer(org, email="taken@x.example")
    customer = make_customer(org, name="Keep")
    response = client.patch(f"/api/crm/customers/{customer.id}", headers=bearer(org.admin),
                            json={"name": "Changed", "email": "TAKEN@x.example"})
    assert set(assert_error(response, 409)["fields"]) == {"email"}
    assert _get(client, org.admin, f"/api/crm/customers/{customer.id}").get_json()["name"] \
        == "Keep"


def test_another_organizations_customer_answers_404_everywhere(client, org, other_org):
    theirs, mine = make_customer(other_org).id, make_customer(org).id
    headers = bearer(org.admin)
    base = f"/api/crm/customers/{theirs}"

    for response in (client.get(base, headers=headers),
                     client.patch(base, headers=headers, json={"name": "x"}),
                     client.delete(base, headers=headers),
                     client.get(f"{base}/activities", headers=headers),
                     client.post(f"{base}/activity", headers=headers,
                                 json={"type": "note", "body": "x"}),
                     client.post(f"{base}/merge", headers=headers,
                                 json={"duplicate_id": mine})):
        assert_error(response, 404, "not_found")
    merged = client.post(f"/api/crm/customers/{mine}/merge", headers=headers,
                         json={"duplicate_id": theirs})
    assert set(assert_error(merged, 422)["fields"]) == {"duplicate_id"}


def test_roles_the_matrix_allows_read_and_others_write(client, org):
    """Agents and members read the CRM; only managers and admins write it."""
    customer = make_customer(org)
    for role in ("agent", "member"):
        user = make_user(org, role)
        assert _get(client, user, f"/api/crm/customers/{customer.id}").status_code == 200
        response = client.post("/api/crm/customers", headers=bearer(user), json={"name": "x"})
        assert_error(response, 403, "forbidden")
    manager = make_user(org, "manager")
    response = client.post("/api/crm/customers", headers=bearer(manager), json={"name": "x"})
    assert response.status_code == 201


# -- activities and merging ---------------------------------------------------------------------

def test_activities_are_logged_and_listed_newest_first_with_a_cursor(client, org):
    customer = make_customer(org)
    headers = bearer(org.admin)
    url = f"/api/crm/customers/{customer.id}"
    for n in range(3):
        response = client.post(f"{url}/activity", headers=headers,
                               json={"type": "note", "body": f"Note {n}"})
        assert response.status_code == 201
    task = client.post(f"{url}/activity", headers=headers, json={
        "type": "task", "body": "Call", "due_at": "2030-05-01T09:00:00+03:00"}).get_json()
    assert (task["due_at"], task["assignee_id"]) == ("2030-05-01T06:00:00Z", ident(org.admin))

    first = client.get(f"{url}/activities?limit=3", headers=headers).get_json()
    rest = client.get(f"{url}/activities?limit=3&cursor={first['next_cursor']}",
                      headers=headers).get_json()
    assert [a["body"] for a in first["items"]] == ["Call", "Note 2", "Note 1"]
    assert [a["type"] for a in rest["items"]] == ["note", "created"]
    assert rest["next_cursor"] is None


def test_an_agent_gets_the_text_of_their_own_conversations_messages_only(client, org):
    """Listed to an agent, a WhatsApp message of a conversation not assigned to them keeps its
    entry with an empty body and `body_hidden`; a manager gets every body."""
    agent, colleague = make_user(org, "agent"), make_user(org, "agent")
    customer = make_customer(org)
    profile = make_profile(org)
    mine = make_conversation(profile, customer_id=customer.id, assigned_user_id=agent.id)
    theirs = make_conversation(profile, customer_id=customer.id, assigned_user_id=colleague.id)
    make_message_activity(org, customer, mine, "Mine")
    make_message_activity(org, customer, theirs, "Theirs", "out")
    make_message_activity(org, customer, make_conversation(profile), "Nobody's")
    url = f"/api/crm/customers/{customer.id}/activities"

    items = _get(client, agent, url).get_json()["items"]
    assert [(a["type"], a["body"], a["body_hidden"]) for a in items] == [
        ("whatsapp_in", "", True), ("whatsapp_out", "", True), ("whatsapp_in", "Mine", False),
        ("created", "", False)]
    assert all(a["created_at"] for a in items)
    items = _get(client, make_user(org, "manager"), url).get_json()["items"]
    assert [(a["body"], a["body_hidden"]) for a in items] == [
        ("Nobody's", False), ("Theirs", False), ("Mine", False), ("", False)]


def test_an_agents_activities_cost_the_same_queries_for_more_hidden_messages(client, org):
    """One query tells which of a page's messages the agent may read, however many."""
    agent = make_user(org, "agent")
    customer = make_customer(org)
    profile = make_profile(org)
    headers = bearer(agent)
    url = f"/api/crm/customers/{customer.id}/activities"

    def add(messages: int) -> None:
        for n in range(messages):
            conversation = make_conversation(profile, customer_id=customer.id,
                                             assigned_user_id=agent.id if n % 2 else None)
            make_message_activity(org, customer, conversation)

    add(2)
    client.get(url, headers=headers)  # warm-up
    with count_queries() as few:
        assert len(client.get(url, headers=headers).get_json()["items"]) == 3
    add(10)
    with count_queries() as many:
        assert len(client.get(url, headers=headers).get_json()["items"]) == 13
    assert len(many) == len(few)


@pytest.mark.parametrize(("body", "fields"), [
    ({"type": "email", "body": "x"}, {"type"}),
    ({"type": "note", "body": ""}, {"body"}),
    ({"type": "task", "body": "x", "due_at": "2030-05-01"}, {"due_at"}),
    ({"type": "task", "body": "x", "assignee_id": True}, {"assignee_id"}),
])
def test_bad_activities_answer_422(client, org, body, fields):
    customer = make_customer(org)
    response = client.post(f"/api/crm/customers/{customer.id}/activity",
                           headers=bearer(org.admin), json=body)
    assert set(assert_error(response, 422)["fields"]) == fields


def test_merge_answers_the_survivor_and_the_duplicate_is_gone(client, org):
    survivor = make_customer(org)
    duplicate = make_customer(org, phone=None, email="dup@x.example")
    headers = bearer(org.admin)

    response = client.post(f"/api/crm/customers/{survivor.id}/merge", headers=headers,
                           json={"duplicate_id": duplicate.id})

    assert response.status_code == 200
    assert response.get_json()["email"] == "dup@x.example"
    assert_error(client.get(f"/api/crm/customers/{duplicate.id}", headers=headers), 404)
    again = client.post(f"/api/crm/customers/{survivor.id}/merge", headers=headers,
                        json={"duplicate_id": survivor.id})
    assert set(assert_error(again, 422)["fields"]) == {"duplicate_id"}


# -- stages and segments ------------------------------------------------------------------------

def test_stages_are_read_by_all_and_edited_by_admins_only(client, org):
    manager = make_user(org, "manager")
    listed = _get(client, make_user(org, "agent"), "/api/crm/sales-stages").get_json()
    assert [s["name_en"] for s in listed["items"]][:2] == ["New lead", "Contacted"]
    assert listed["items"][0]["name"] == "عميل محتمل"  # the caller's language
    body = {"name_ar": "تفاوض", "name_en": "Negotiation", "color": "#112233"}
    assert_error(client.post("/api/crm/sales-stages", headers=bearer(manager), json=body), 403)

    created = client.post("/api/crm/sales-stages", headers=bearer(org.admin), json=body)
    assert created.status_code == 201
    stage_id = created.get_json()["id"]
    patched = client.patch(f"/api/crm/sales-stages/{stage_id}", headers=bearer(org.admin),
                           json={"is_won": True})
    assert patched.get_json()["is_won"] is True
    refused = client.patch(f"/api/crm/sales-stages/{stage_id}", headers=bearer(org.admin),
                           json={"is_lost": True, "color": "blue"})
    assert set(assert_error(refused, 422)["fields"]) == {"color"}
    assert client.delete(f"/api/crm/sales-stages/{stage_id}",
                         headers=bearer(org.admin)).status_code == 204


def test_the_last_stage_cannot_be_deleted(client, org):
    stages = _stages(org)
    headers = bearer(org.admin)
    for stage in stages[:-1]:
        assert client.delete(f"/api/crm/sales-stages/{stage.id}", headers=headers
                             ).status_code == 204
    assert_error(client.delete(f"/api/crm/sales-stages/{stages[-1].id}", headers=headers), 409)


def test_another_organizations_stage_and_segment_answer_404(client, org, other_org):
    stage, segment = make_stage(other_org).id, make_segment(other_org).id
    headers = bearer(org.admin)
    assert_error(client.patch(f"/api/crm/sales-stages/{stage}", headers=headers,
                              json={"name_en": "x"}), 404)
    assert_error(client.delete(f"/api/crm/sales-stages/{stage}", headers=headers), 404)
    assert_error(client.get(f"/api/crm/segments/{segment}/customers", headers=headers), 404)


def test_segments_save_filters_and_list_their_customers(client, org):
    make_customer(org, tags=["vip"], name="In")
    make_customer(org, name="Out")
    headers = bearer(org.admin)

    created = client.post("/api/crm/segments", headers=headers,
                          json={"name": "VIP", "filters": {"tag": "vip", "score_min": 0}})
    assert created.status_code == 201
    segment = created.get_json()
    assert segment["filters"] == {"tag": "vip", "score_min": 0}
    listed = client.get("/api/crm/segments", headers=headers).get_json()["items"]
    assert [s["id"] for s in listed] == [segment["id"]]
    customers = client.get(f"/api/crm/segments/{segment['id']}/customers",
                           headers=headers).get_json()["items"]
    assert [c["name"] for c in customers] == ["In"]

    for filters, field in (({"stage_id": "5"}, "stage_id"), ({"score_min": "x"}, "score_min"),
                           ({"cf_nope": "1"}, "cf_nope")):
        refused = client.post("/api/crm/segments", headers=headers,
                              json={"name": "Bad", "filters": filters})
        assert set(assert_error(refused, 422)["fields"]) == {field}


def test_an_expected_value_through_the_api(client, org):
    """The expected value is set and answered as a decimal string; a negative one or one
    with three decimals is refused beside its field."""
    created = client.post("/api/crm/customers", headers=bearer(org.admin),
                          json={"name": "Value", "expected_value": "1250.5"})
    assert created.status_code == 201
    assert created.get_json()["expected_value"] == "1250.50"
    for bad in (-1, "12.345"):
        refused = client.post("/api/crm/customers", headers=bearer(org.admin),
                              json={"name": "Bad", "expected_value": bad})
        assert refused.status_code == 422
        assert set(refused.get_json()["error"]["fields"]) == {"expected_value"}
