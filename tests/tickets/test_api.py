"""Ticketing's JSON API: every endpoint, its errors (422 naming each field in the caller's
language, 409, 412), who may see what (agents only their tickets, 404 otherwise, as for
another organization's), keyset pages, and the SLA clocks as the API shows them over fixed
dates: Thursday into Sunday in Riyadh, Eid al-Fitr 1448, daylight saving time in Berlin, a
policy change and a time zone change moving an open ticket's clocks."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from crm.extensions import db
from crm.foundation.services import update_organization
from crm.tenancy import organization_context
from crm.tickets import services, sla
from crm.tickets.models import Ticket, TicketComment
from tests.api import assert_error
from tests.customers.factories import make_customer
from tests.factories import bearer, make_user, run_jobs
from tests.foundation import arabic, ident
from tests.queries import count_queries
from tests.tickets.factories import make_team, make_ticket, reload_ticket

TICKET_FIELDS = {"id", "number", "subject", "description", "type_id", "priority", "status",
                 "customer_id", "conversation_id", "assignee_id", "team_id", "tags", "source",
                 "created_by_id", "created_at", "updated_at", "first_responded_at",
                 "solved_at", "closed_at", "sla", "version", "edited_by_id", "edited_at"}
SLA_FIELDS = {"first_response_due_at", "next_response_due_at", "resolution_due_at", "breached",
              "paused", "status"}
# Thursday 3 December 2026, 16:00 in Riyadh: an hour before closing, the weekend ahead.
THURSDAY_4PM = "2026-12-03T16:00:00+03:00"


def _get(client, user, url: str):
    return client.get(url, headers=bearer(user))


def _post(client, user, url: str, body: dict):
    return client.post(url, headers=bearer(user), json=body)


def _patch(client, user, url: str, body: dict, **headers):
    return client.patch(url, headers={**bearer(user), **headers}, json=body)


def _numbers(response) -> list[int]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [item["number"] for item in response.get_json()["items"]]


def _opened_at(org, ticket, moment: str) -> None:
    """Make the ticket opened at a fixed moment, its clocks computed from it (the API cannot
    choose when a ticket was opened; the clocks then run over fixed dates)."""
    with organization_context(ident(org)):
        row = db.session.get(Ticket, ident(ticket))
        row.created_at = datetime.fromisoformat(moment)
        sla.recompute(row, services.load_context(), row.created_at)
        db.session.flush()


# -- creating and reading -------------------------------------------------------------------

def test_create_answers_201_with_the_ticket_and_its_clocks(client, org):
    """The source is `api`; a normal ticket's clocks run as the default policy says; the
    answer carries the version as ETag; GET answers the same."""
    customer = make_customer(org, name="سلمى")
    response = _post(client, org.admin, "/api/tickets", {
        "subject": "الطابعة لا تعمل", "priority": "high", "tags": ["vip"],
        "customer_id": customer.id})

    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == TICKET_FIELDS
    assert set(body["sla"]) == SLA_FIELDS
    assert (body["number"], body["status"], body["priority"], body["source"]) == (
        1, "open", "high", "api")
    assert (body["customer_id"], body["tags"], body["assignee_id"]) == (customer.id, ["vip"],
                                                                        None)
    assert body["sla"]["breached"] == []
    assert body["sla"]["paused"] is False
    assert body["sla"]["first_response_due_at"].endswith("Z")
    assert response.headers["ETag"] == '"1"'
    shown = _get(client, org.admin, f"/api/tickets/{body['id']}")
    assert shown.get_json() == body
    assert shown.headers["ETag"] == '"1"'


def test_an_agent_s_own_ticket_is_theirs(client, org):
    agent = make_user(org, "agent")
    body = _post(client, agent, "/api/tickets", {"subject": "Mine"}).get_json()
    assert body["assignee_id"] == agent.id


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"subject"}),
    ({"subject": ""}, {"subject"}),
    ({"subject": "x" * 201, "priority": "whenever"}, {"subject", "priority"}),
    ({"subject": "S", "tags": "vip"}, {"tags"}),
    ({"subject": "S", "assignee_id": "12"}, {"assignee_id"}),
    ({"subject": "S", "status": "open"}, {"status"}),
])
def test_a_bad_ticket_answers_422_naming_each_field(client, org, body, fields):
    """The body's mistakes, each named, in the caller's language (the admin's is Arabic);
    nothing is written."""
    error = assert_error(_post(client, org.admin, "/api/tickets", body), 422,
                         "validation_error")
    assert set(error["fields"]) == fields
    assert error["message"] == arabic("Please correct the highlighted fields.")
    with organization_context(ident(org)):
        assert db.session.scalar(select(Ticket.id)) is None


def test_what_only_the_services_know_is_named_too(client, org, other_org):
    """A type, customer or member of another organization, or a member who does not work
    tickets, is the field's error (never a 404 or a 500)."""
    foreign = make_customer(other_org)
    member = make_user(org, "member")
    error = assert_error(_post(client, org.admin, "/api/tickets", {
        "subject": "S", "customer_id": foreign.id, "assignee_id": member.id,
        "type_id": 2**62, "team_id": 2**62}), 422)
    assert set(error["fields"]) == {"customer_id", "assignee_id", "type_id", "team_id"}
    assert error["fields"]["assignee_id"] == arabic("Choose a member who works on tickets.")


# -- the list -------------------------------------------------------------------------------

def test_the_list_filters_and_views(client, org):
    """status, priority, assignee, customer, search (Arabic letter variants folded, or the
    number) and each view: mine, unassigned, breached, breaching."""
    manager = make_user(org, "manager")
    customer = make_customer(org, name="أمل")
    first = make_ticket(org, subject="الفاتورة خاطئة", customer_id=customer.id)
    second = make_ticket(org, subject="Late delivery", priority="urgent",
                         assignee_id=manager.id)
    third = make_ticket(org, subject="Refund")
    make_ticket(org, subject="Pending one", assignee_id=manager.id)
    with organization_context(ident(org)):
        services.update_ticket(org.admin, reload_ticket(org, third), {"status": "solved"})
        row = reload_ticket(org, first)
        row.sla_status = "breached"
        reload_ticket(org, second).sla_status = "warning"
        db.session.flush()

    def listed(query: str) -> list[int]:
        return _numbers(_get(client, manager, f"/api/tickets?{query}"))

    assert listed("") == [4, 3, 2, 1]
    assert listed("status=solved") == [3]
    assert listed("priority=urgent") == [2]
    assert listed(f"assignee_id={manager.id}") == [4, 2]
    assert listed(f"customer_id={customer.id}") == [1]
    assert listed("search=الفاتوره") == [1]
    assert listed("search=%23" + "3") == [3]  # #3
    assert listed("search=امل") == [1]  # the customer's name
    assert listed("view=mine") == [4, 2]
    assert listed("view=unassigned") == [1]  # #3 is solved
    assert listed("view=unassigned&status=solved") == [3]
    assert listed("view=breached") == [1]
    assert listed("view=breaching") == [2]


@pytest.mark.parametrize("query", ["status=lost", "priority=p1", "view=everything",
                                   "assignee_id=abc", "customer_id=-1", "limit=0",
                                   "limit=201", "cursor=nope", f"search={'x' * 101}"])
def test_bad_list_parameters_answer_422_naming_the_parameter(client, org, query):
    error = assert_error(_get(client, org.admin, f"/api/tickets?{query}"), 422,
                         "validation_error")
    assert set(error["fields"]) == {query.split("=")[0]}


@pytest.mark.parametrize(("view", "raw"), [
    ("all", "99999999999999999999"), ("all", json.dumps(["id", 2**70])),
    ("all", json.dumps(["id", "x"])), ("all", json.dumps(["id"])),
    ("breaching", "2026-12-03T00:00:00+00:00|99999999999999999999"),
    ("breaching", json.dumps(["due", "2026-12-03T00:00:00+00:00", 2**70])),
    ("breaching", json.dumps(["due", "2026-12-03T00:00:00", 1])),
])
def test_a_forged_cursor_answers_422(client, org, view, raw):
    """A cursor naming an id no BIGINT holds, a moment without a zone, or of the wrong
    shape, is the cursor's error, never a 500."""
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    error = assert_error(_get(client, org.admin, f"/api/tickets?view={view}&cursor={cursor}"),
                         422)
    assert set(error["fields"]) == {"cursor"}


@pytest.mark.parametrize("view", ["all", "breaching"])
def test_the_list_pages_with_a_cursor(client, org, view):
    """limit=2 walks every ticket once, in the view's order, over several pages."""
    made = [make_ticket(org) for _n in range(5)]
    with organization_context(ident(org)):
        for row in made:
            reload_ticket(org, row).sla_status = "warning"
        db.session.flush()
    seen, cursor, pages = [], None, 0
    while True:
        url = f"/api/tickets?view={view}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = _get(client, org.admin, url).get_json()
        seen += [item["number"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    # Newest first; breaching: soonest due first (the oldest, as all are alike).
    assert seen == ([5, 4, 3, 2, 1] if view == "all" else [1, 2, 3, 4, 5])
    other = "breaching" if view == "all" else "all"
    first = _get(client, org.admin, f"/api/tickets?view={view}&limit=2").get_json()
    error = assert_error(_get(client, org.admin, f"/api/tickets?view={other}&cursor="
                                                 f"{first['next_cursor']}"), 422)
    assert set(error["fields"]) == {"cursor"}


def test_the_list_runs_the_same_queries_for_few_or_many_tickets(client, org):
    """No query per row: a page of 12 tickets (with assignees) costs what a page of 2
    costs."""
    headers = bearer(org.admin)

    def reads(tickets: int) -> list[str]:
        client.get("/api/tickets", headers=headers)  # what the factories left to deliver
        with count_queries() as statements:
            items = client.get("/api/tickets", headers=headers).get_json()["items"]
        assert len(items) == tickets
        return [s for s in statements if s.startswith("SELECT") and "set_config" not in s]

    team = make_team(org)
    for _n in range(2):
        make_ticket(org, assignee_id=make_user(org, "agent").id, team_id=team.id)
    few = reads(2)
    for _n in range(10):
        make_ticket(org, assignee_id=make_user(org, "agent").id)
    assert len(reads(12)) == len(few)
    # The caller with the module switches, and the page: the answer names the type, the
    # assignee and the team by id, so none of them is read (each was a round trip).
    assert len(few) == 2, few


# -- who may see what -------------------------------------------------------------------------

def test_an_agent_reaches_only_tickets_assigned_to_them(client, org):
    """Another's ticket is 404 to an agent, whatever the route; the list leaves it out; a
    manager reaches every ticket."""
    agent, colleague = make_user(org, "agent"), make_user(org, "agent")
    theirs = make_ticket(org, assignee_id=colleague.id)
    mine = make_ticket(org, assignee_id=agent.id)
    make_ticket(org)

    assert _numbers(_get(client, agent, "/api/tickets")) == [mine.number]
    assert _numbers(_get(client, agent, f"/api/tickets?assignee_id={colleague.id}")) == []
    for response in (
            _get(client, agent, f"/api/tickets/{ident(theirs)}"),
            _patch(client, agent, f"/api/tickets/{ident(theirs)}", {"status": "solved"}),
            _post(client, agent, f"/api/tickets/{ident(theirs)}/assign", {"user_id": agent.id}),
            _get(client, agent, f"/api/tickets/{ident(theirs)}/comments"),
            _post(client, agent, f"/api/tickets/{ident(theirs)}/comments",
                  {"body": "x", "public": False})):
        assert_error(response, 404, "not_found")
    assert reload_ticket(org, theirs).status == "open"
    manager = make_user(org, "manager")
    assert _get(client, manager, f"/api/tickets/{ident(theirs)}").status_code == 200


def test_a_member_reads_but_does_not_write(client, org):
    member = make_user(org, "member")
    ticket = make_ticket(org)
    assert _get(client, member, f"/api/tickets/{ident(ticket)}").status_code == 200
    assert_error(_post(client, member, "/api/tickets", {"subject": "S"}), 403)
    assert_error(_patch(client, member, f"/api/tickets/{ident(ticket)}", {"subject": "T"}), 403)


def test_another_organization_s_ticket_is_not_found(client, org, other_org):
    foreign = make_ticket(other_org)
    for response in (
            _get(client, org.admin, f"/api/tickets/{ident(foreign)}"),
            _patch(client, org.admin, f"/api/tickets/{ident(foreign)}", {"subject": "Mine"}),
            _post(client, org.admin, f"/api/tickets/{ident(foreign)}/assign", {"user_id": None}),
            _post(client, org.admin, f"/api/tickets/{ident(foreign)}/comments",
                  {"body": "x", "public": True})):
        assert_error(response, 404, "not_found")
    assert _numbers(_get(client, org.admin, "/api/tickets")) == []
    assert reload_ticket(other_org, foreign).subject != "Mine"


# -- changing -------------------------------------------------------------------------------

def test_patch_changes_only_what_is_sent_and_pauses_the_clocks(client, org):
    """pending pauses the clocks (`paused`, status "paused"); open resumes them."""
    ticket = make_ticket(org, tags=["a"])
    url = f"/api/tickets/{ident(ticket)}"
    body = _patch(client, org.admin, url, {"status": "pending", "subject": "New"}).get_json()
    assert (body["status"], body["subject"], body["tags"]) == ("pending", "New", ["a"])
    assert body["sla"]["paused"] is True
    assert body["sla"]["status"] == "paused"
    assert body["version"] == 2
    body = _patch(client, org.admin, url, {"status": "open", "priority": "urgent",
                                           "tags": ["b"]}).get_json()
    assert body["sla"]["paused"] is False
    assert body["sla"]["status"] == "ok"
    assert (body["priority"], body["tags"]) == ("urgent", ["b"])


def test_a_stale_if_match_answers_412_with_the_ticket_as_it_is(client, org):
    ticket = make_ticket(org)
    url = f"/api/tickets/{ident(ticket)}"
    assert _patch(client, org.admin, url, {"subject": "First"},
                  **{"If-Match": '"1"'}).status_code == 200
    response = _patch(client, org.admin, url, {"subject": "Second"}, **{"If-Match": '"1"'})
    assert response.status_code == 412
    assert response.get_json()["current"]["subject"] == "First"
    assert response.headers["ETag"] == '"2"'
    assigned = client.post(f"{url}/assign", json={"user_id": None},
                           headers={**bearer(org.admin), "If-Match": '"1"'})
    assert assigned.status_code == 412


def test_a_closed_ticket_cannot_change(client, org):
    ticket = make_ticket(org)
    url = f"/api/tickets/{ident(ticket)}"
    assert _patch(client, org.admin, url, {"status": "closed"}).status_code == 200
    assert_error(_patch(client, org.admin, url, {"subject": "Again"}), 409, "conflict")
    assert_error(_post(client, org.admin, f"{url}/comments", {"body": "x", "public": False}),
                 409)


@pytest.mark.parametrize(("body", "fields"), [
    ({"status": "done"}, {"status"}), ({"subject": None}, {"subject"}),
    ({"subject": "S", "conversation_id": 1}, {"conversation_id"}),
    ({"tags": ["x" * 41]}, {"tags"}),
])
def test_a_bad_change_answers_422(client, org, body, fields):
    ticket = make_ticket(org, subject="Kept")
    error = assert_error(_patch(client, org.admin, f"/api/tickets/{ident(ticket)}", body), 422)
    assert set(error["fields"]) == fields
    assert reload_ticket(org, ticket).subject == "Kept"


def test_assign_and_unassign(client, org):
    agent = make_user(org, "agent")
    ticket = make_ticket(org)
    url = f"/api/tickets/{ident(ticket)}/assign"
    body = _post(client, org.admin, url, {"user_id": agent.id}).get_json()
    assert (body["assignee_id"], body["version"]) == (agent.id, 2)
    assert _get(client, agent, f"/api/tickets/{ident(ticket)}").status_code == 200
    assert _post(client, org.admin, url, {"user_id": None}).get_json()["assignee_id"] is None
    error = assert_error(_post(client, org.admin, url, {"user_id": make_user(org, "member").id}),
                         422)
    assert error["fields"] == {"user_id": arabic("Choose a member who works on tickets.")}
    assert set(assert_error(_post(client, org.admin, url, {}), 422)["fields"]) == {"user_id"}


# -- comments -------------------------------------------------------------------------------

def test_a_public_reply_stops_the_first_response_clock_and_a_note_does_not(client, org):
    """The clock stops at the first public reply; its due moment stays, to compare."""
    ticket = make_ticket(org)
    url = f"/api/tickets/{ident(ticket)}/comments"
    note = _post(client, org.admin, url, {"body": "Internal: check the logs", "public": False})
    assert note.status_code == 201
    assert set(note.get_json()) == {"id", "ticket_id", "author_id", "public", "body",
                                    "message_id", "attachments", "created_at"}
    assert note.get_json()["public"] is False
    shown = _get(client, org.admin, f"/api/tickets/{ident(ticket)}").get_json()
    assert shown["first_responded_at"] is None
    reply = _post(client, org.admin, url, {"body": "We are on it", "public": True}).get_json()
    assert reply["public"] is True
    shown = _get(client, org.admin, f"/api/tickets/{ident(ticket)}").get_json()
    assert shown["first_responded_at"] is not None  # in time: nothing breached
    assert shown["sla"]["breached"] == []


def test_comments_list_oldest_first_in_pages(client, org):
    ticket = make_ticket(org)
    url = f"/api/tickets/{ident(ticket)}/comments"
    for n in range(3):
        _post(client, org.admin, url, {"body": f"note {n}", "public": False})
    first = _get(client, org.admin, f"{url}?limit=2").get_json()
    assert [c["body"] for c in first["items"]] == ["note 0", "note 1"]
    rest = _get(client, org.admin, f"{url}?limit=2&cursor={first['next_cursor']}").get_json()
    assert [c["body"] for c in rest["items"]] == ["note 2"]
    assert rest["next_cursor"] is None


def test_a_comment_with_a_file_as_multipart(client, org):
    ticket = make_ticket(org)
    response = client.post(f"/api/tickets/{ident(ticket)}/comments", headers=bearer(org.admin),
                           data={"public": "false", "body": "",
                                 "file": (io.BytesIO(b"%PDF-1.4 x"), "فاتورة.pdf",
                                          "application/pdf")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_data(as_text=True)
    (attachment,) = response.get_json()["attachments"]
    assert (attachment["filename"], attachment["mime_type"], attachment["size"]) == (
        "فاتورة.pdf", "application/pdf", 10)


@pytest.mark.parametrize(("body", "fields"), [
    ({"public": True}, {"body"}), ({"body": "  ", "public": False}, {"body"}),
    ({"body": "x"}, {"public"}), ({"body": "x", "public": "yes"}, {"public"}),
])
def test_a_bad_comment_answers_422(client, org, body, fields):
    ticket = make_ticket(org)
    error = assert_error(_post(client, org.admin, f"/api/tickets/{ident(ticket)}/comments", body),
                         422)
    assert set(error["fields"]) == fields
    with organization_context(ident(org)):
        assert db.session.scalar(select(TicketComment.id)) is None


# -- the SLA preview --------------------------------------------------------------------------

def _preview(client, user, priority: str, opened_at: str) -> dict:
    response = _post(client, user, "/api/tickets/sla-preview",
                     {"priority": priority, "opened_at": opened_at})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_normal_ticket_opened_thursday_4pm_in_riyadh_is_due_sunday_noon(client, org):
    """One business hour on Thursday, the Friday–Saturday weekend, three on Sunday: 12:00
    Riyadh (09:00 UTC); resolution (16 h) on Monday 16:00."""
    assert _preview(client, make_user(org, "agent"), "normal", THURSDAY_4PM) == {
        "first_response_due_at": "2026-12-06T09:00:00Z",
        "resolution_due_at": "2026-12-07T13:00:00Z"}


def test_a_ticket_across_eid_al_fitr_1448_waits_for_the_holiday(client, org):
    """Monday 8 March 2027 16:00: Eid al-Fitr (from the organization's default holidays),
    the weekend and the observed Sunday hold the clock until Monday 15 March."""
    assert _preview(client, org.admin, "normal", "2027-03-08T16:00:00+03:00") == {
        "first_response_due_at": "2027-03-15T09:00:00Z",  # 12:00 Riyadh
        "resolution_due_at": "2027-03-16T13:00:00Z"}  # Tuesday 16:00


def test_daylight_saving_time_in_a_european_organization(client, org):
    """Berlin, Monday to Friday: Friday 29 October 2027 16:00 CEST plus four hours is Monday
    1 November 12:00 CET — 11:00 UTC, an hour later in UTC than Friday's offset would say."""
    with organization_context(ident(org)):
        update_organization(org.admin, org.name, "en", "Europe/Berlin", "DE")
        db.session.flush()
    assert _preview(client, org.admin, "normal", "2027-10-29T16:00:00+02:00") == {
        "first_response_due_at": "2027-11-01T11:00:00Z",
        "resolution_due_at": "2027-11-02T15:00:00Z"}  # Tuesday 16:00 CET


@pytest.mark.parametrize(("body", "fields"), [
    ({"priority": "p1", "opened_at": "Thursday"}, {"priority", "opened_at"}),
    ({"opened_at": THURSDAY_4PM}, {"priority"}),
    ({"priority": "low", "opened_at": "2026-12-03T16:00"}, {"opened_at"}),  # no offset
    ({"priority": "low", "type_id": "1"}, {"type_id"}),
])
def test_a_bad_preview_answers_422(client, org, body, fields):
    error = assert_error(_post(client, org.admin, "/api/tickets/sla-preview", body), 422)
    assert set(error["fields"]) == fields


# -- SLA settings ---------------------------------------------------------------------------

def test_a_policy_change_moves_an_open_ticket_s_clocks(app, client, org):
    """Stricter normal targets (1 h / 2 h) for a ticket opened Thursday 16:00: first response
    at 17:00, resolution on Sunday 10:00."""
    ticket = make_ticket(org)
    _opened_at(org, ticket, THURSDAY_4PM)
    headers = bearer(org.admin)
    policies = client.get("/api/tickets/sla-policies", headers=headers).get_json()["policies"]
    assert [p["priority"] for p in policies] == ["low", "normal", "high", "urgent"]
    rows = [{key: p[key] for key in ("priority", "type_id", "first_response_minutes",
                                     "next_response_minutes", "resolution_minutes")}
            for p in policies]
    rows[1] |= {"first_response_minutes": 60, "resolution_minutes": 120}
    response = client.put("/api/tickets/sla-policies", headers=headers, json={"policies": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["policies"][1]["resolution_minutes"] == 120
    run_jobs(app)
    clocks = client.get(f"/api/tickets/{ident(ticket)}", headers=headers).get_json()["sla"]
    assert (clocks["first_response_due_at"], clocks["resolution_due_at"]) == (
        "2026-12-03T14:00:00Z", "2026-12-06T07:00:00Z")


def test_a_time_zone_change_moves_an_open_ticket_s_clocks(app, client, org):
    """Riyadh to Berlin (UTC+1 in December), the same hours: the ticket opened 13:00 UTC
    (Thursday 14:00 in Berlin) has three hours that day and one on Sunday, 09:00 UTC."""
    ticket = make_ticket(org)
    _opened_at(org, ticket, THURSDAY_4PM)
    headers = bearer(org.admin)
    with organization_context(ident(org)):
        update_organization(org.admin, org.name, "ar", "Europe/Berlin", "SA")
        db.session.flush()
    run_jobs(app)
    clocks = client.get(f"/api/tickets/{ident(ticket)}", headers=headers).get_json()["sla"]
    assert clocks["first_response_due_at"] == "2026-12-06T09:00:00Z"


@pytest.mark.parametrize("body", [
    {"policies": []}, {"policies": [{"priority": "normal"}]},
    {"policies": [{"priority": "normal", "first_response_minutes": 0,
                   "next_response_minutes": 1, "resolution_minutes": 1}]},
    {"policies": [{"priority": p, "first_response_minutes": 1, "next_response_minutes": 1,
                   "resolution_minutes": 1} for p in ("low", "normal", "high")]},
])
def test_bad_policies_answer_422_and_change_nothing(client, org, body):
    before = _get(client, org.admin, "/api/tickets/sla-policies").get_json()
    assert_error(client.put("/api/tickets/sla-policies", headers=bearer(org.admin), json=body),
                 422)
    assert _get(client, org.admin, "/api/tickets/sla-policies").get_json() == before


def test_business_hours_read_and_replaced(client, org):
    """Sunday–Thursday 09:00–17:00 by default for Saudi Arabia; a split shift replaces it."""
    shown = _get(client, org.admin, "/api/tickets/business-hours").get_json()
    assert shown["timezone"] == "Asia/Riyadh"
    assert shown["hours"] == [{"weekday": day, "start": "09:00", "end": "17:00"}
                              for day in (0, 1, 2, 3, 6)]
    hours = [{"weekday": 6, "start": "08:00", "end": "12:00"},
             {"weekday": 6, "start": "16:00", "end": "24:00"}]
    response = client.put("/api/tickets/business-hours", headers=bearer(org.admin),
                          json={"hours": hours})
    assert response.get_json()["hours"] == hours
    error = assert_error(client.put("/api/tickets/business-hours", headers=bearer(org.admin),
                                    json={"hours": [{"weekday": 1, "start": "9",
                                                     "end": "17:00"}]}), 422)
    assert error["fields"] == {"hours.0.start": arabic("Enter a time such as 09:00.")}
    error = assert_error(client.put("/api/tickets/business-hours", headers=bearer(org.admin),
                                    json={"hours": [{"weekday": 7, "start": "09:00",
                                                     "end": "17:00"}]}), 422)
    assert set(error["fields"]) == {"hours"}


def test_holidays_listed_added_renamed_and_removed(client, org):
    url = "/api/tickets/holidays"
    days = {h["day"]: h for h in _get(client, org.admin, f"{url}?year=2027").get_json()["items"]}
    assert days["2027-03-09"]["source"] == "country"
    added = _post(client, org.admin, url, {"day": "2027-01-07", "name": "يوم الشركة"})
    assert added.status_code == 201
    holiday = added.get_json()
    assert (holiday["day"], holiday["source"]) == ("2027-01-07", "custom")
    assert_error(_post(client, org.admin, url, {"day": "2027-01-07", "name": "Again"}), 409)
    error = assert_error(_post(client, org.admin, url, {"day": "7/1/2027", "name": "X"}), 422)
    assert set(error["fields"]) == {"day"}
    renamed = _patch(client, org.admin, f"{url}/{holiday['id']}", {"name": "Company day"})
    assert renamed.get_json()["name"] == "Company day"
    assert client.delete(f"{url}/{holiday['id']}", headers=bearer(org.admin)).status_code == 204
    assert client.delete(f"{url}/{holiday['id']}", headers=bearer(org.admin)).status_code == 404
    eid = days["2027-03-09"]["id"]
    assert client.delete(f"{url}/{eid}", headers=bearer(org.admin)).status_code == 204
    listed = _get(client, org.admin, f"{url}?year=2027").get_json()["items"]
    assert "2027-03-09" not in [h["day"] for h in listed]
    assert_error(_get(client, org.admin, f"{url}?year=1999"), 422)


def test_settings_are_the_admins_to_change_and_managers_to_read(client, org):
    manager, agent = make_user(org, "manager"), make_user(org, "agent")
    for url in ("/api/tickets/sla-policies", "/api/tickets/business-hours",
                "/api/tickets/holidays"):
        assert _get(client, manager, url).status_code == 200
        assert_error(_get(client, agent, url), 403)
    assert_error(client.put("/api/tickets/business-hours", headers=bearer(manager),
                            json={"hours": []}), 403)
    assert_error(_post(client, manager, "/api/tickets/holidays",
                       {"day": "2027-01-07", "name": "X"}), 403)


def test_another_organization_s_holiday_is_not_found(client, org, other_org):
    with organization_context(ident(other_org)):
        foreign = services.list_holidays()[0]
        foreign_id = foreign.id
    assert_error(_patch(client, org.admin, f"/api/tickets/holidays/{foreign_id}",
                        {"name": "Mine"}), 404)
    assert_error(client.delete(f"/api/tickets/holidays/{foreign_id}",
                               headers=bearer(org.admin)), 404)


def test_now_is_the_preview_s_default_moment(client, org):
    response = _post(client, org.admin, "/api/tickets/sla-preview", {"priority": "urgent"})
    due = datetime.fromisoformat(response.get_json()["first_response_due_at"])
    assert due > datetime.now(UTC)
