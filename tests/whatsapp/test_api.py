"""The WhatsApp API: numbers, conversations and messages over /api/whatsapp, as the OpenAPI
document describes them; agents see only their conversations, other organizations nothing."""

from __future__ import annotations

import io
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm.extensions import db
from crm.foundation import services as foundation_services
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp.channels.web import qr_key
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile
from tests.api import assert_error, walk_pages
from tests.factories import bearer, make_user, run_jobs
from tests.foundation import arabic
from tests.queries import assert_max_queries, count_queries
from tests.whatsapp.factories import close_queue, make_conversation, make_message, make_profile

PROFILE_FIELDS = {"id", "display_name", "phone_number", "provider", "state", "phone_number_id",
                  "business_account_id", "auto_assign", "webhook_url", "verify_token",
                  "access_token", "app_secret", "verified_at", "verified_name",
                  "webhook_verified_at", "last_error", "created_at"}
CONVERSATION_FIELDS = {"id", "profile_id", "contact_phone", "contact_user_id", "contact_name",
                       "status", "assigned_user_id", "unread_count", "last_message_at",
                       "last_message_preview", "window_open", "customer_id", "created_at",
                       "version", "edited_by_id", "edited_at"}
MESSAGE_FIELDS = {"id", "conversation_id", "direction", "type", "body", "status", "error_code",
                  "error_message", "media", "reply_to_message_id", "is_forwarded", "edited_at",
                  "deleted_at", "sender_user_id", "sent_at", "delivered_at", "read_at",
                  "created_at"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ACCESS_TOKEN = "EAAG-very-secret-access-token-9876"
APP_SECRET = "an-app-secret-5432"


def _get(model, org_id: int, object_id: int):
    """The row as stored now (the request committed and expired what the test holds)."""
    with organization_context(org_id):
        return db.session.get(model, object_id, populate_existing=True)


def _count(model, org_id: int) -> int:
    with organization_context(org_id):
        return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def sandbox(org):
    return make_profile(org, "sandbox")


@pytest.fixture
def conversation(sandbox):
    return make_conversation(sandbox, contact_name="Fatima")


# -- numbers -----------------------------------------------------------------------------------

def _cloud_body(**overrides) -> dict:
    return {"provider": "cloud", "display_name": "Support", "phone_number": "0501234567",
            "phone_number_id": "106540352242922", "business_account_id": "102290129340398",
            "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, **overrides}


def test_an_admin_connects_a_cloud_number_and_secrets_come_back_masked(client, org, caplog,
                                                                      graph):
    """The answer has the webhook URL and verify token to paste into Meta, the secrets only as
    their last four characters; neither the answer nor any log line holds them in full. It
    waits for Meta to verify the webhook."""
    caplog.set_level(logging.DEBUG)
    graph.add_number("106540352242922", token=ACCESS_TOKEN)
    response = client.post("/api/whatsapp/profiles", json=_cloud_body(),
                           headers=bearer(org.admin))

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == PROFILE_FIELDS
    assert body["provider"] == "cloud"
    assert body["state"] == "pending"
    assert body["phone_number"] == "+966501234567"
    assert body["webhook_url"] == f"http://localhost/webhooks/whatsapp/{body['id']}"
    assert len(body["verify_token"]) >= 20
    assert body["access_token"] == "•" * 8 + "9876"
    assert body["app_secret"] == "•" * 8 + "5432"
    shown = client.get(f"/api/whatsapp/profiles/{body['id']}", headers=bearer(org.admin))
    for secret in (ACCESS_TOKEN, APP_SECRET):
        assert secret not in response.get_data(as_text=True)
        assert secret not in shown.get_data(as_text=True)
        assert secret not in caplog.text


@pytest.mark.parametrize("provider", ["web", "sandbox"])
def test_web_and_sandbox_numbers_have_no_cloud_fields(client, org, provider):
    """A linked device starts pairing at once (its QR code comes from the supervisor), the
    sandbox is live at once; neither shows a webhook or secrets."""
    response = client.post("/api/whatsapp/profiles",
                           json={"provider": provider, "display_name": "Shop"},
                           headers=bearer(org.admin))

    assert response.status_code == 201
    body = response.get_json()
    assert body["state"] == ("pairing" if provider == "web" else "connected")
    assert [body[k] for k in ("webhook_url", "verify_token", "access_token", "app_secret")] == [
        None] * 4


@pytest.mark.parametrize(("overrides", "fields"), [
    ({"provider": "telegram"}, {"provider"}),
    ({"access_token": None, "app_secret": ""}, {"access_token", "app_secret"}),
    ({"phone_number_id": "1" * 65}, {"phone_number_id"}),
    ({"business_account_id": 12}, {"business_account_id"}),
    ({"auto_assign": "yes"}, {"auto_assign"}),
    ({"phone_number": "12"}, {"phone_number"}),
    ({"display_name": "   "}, {"display_name"}),
])
def test_a_bad_number_is_refused_and_nothing_is_stored(client, org, overrides, fields):
    """Each invalid field answers 422 naming it; no profile is created."""
    response = client.post("/api/whatsapp/profiles", json=_cloud_body(**overrides),
                           headers=bearer(org.admin))

    assert assert_error(response, 422, "validation_error")["fields"].keys() == fields
    assert _count(WhatsAppProfile, org.id) == 0


def test_a_meta_number_already_connected_is_a_conflict(client, org, other_org, graph):
    """A phone number id is routed to one proven profile only, across organizations: 409."""
    graph.add_number("106540352242922", token=ACCESS_TOKEN)
    make_profile(other_org, phone_number_id="106540352242922")
    response = client.post("/api/whatsapp/profiles", json=_cloud_body(),
                           headers=bearer(org.admin))

    assert assert_error(response, 409, "conflict")["fields"] == {
        "phone_number_id": arabic("Already connected.")}
    assert _count(WhatsAppProfile, org.id) == 0


@pytest.mark.parametrize("role", ["manager", "agent", "member"])
def test_only_admins_manage_numbers_and_everyone_in_the_inbox_lists_them(client, org, sandbox,
                                                                         role):
    """Creating, connecting, disconnecting and deleting a number is 403 for other roles;
    listing and reading are not."""
    headers = bearer(make_user(org, role))
    assert client.post("/api/whatsapp/profiles", json={"provider": "sandbox",
                                                       "display_name": "X"},
                       headers=headers).status_code == 403
    assert client.post("/api/whatsapp/connect", json={"profile_id": sandbox.id},
                       headers=headers).status_code == 403
    assert client.post(f"/api/whatsapp/profiles/{sandbox.id}/disconnect",
                       headers=headers).status_code == 403
    assert client.delete(f"/api/whatsapp/profiles/{sandbox.id}",
                         headers=headers).status_code == 403
    listed = client.get("/api/whatsapp/profiles", headers=headers)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.get_json()["items"]] == [sandbox.id]
    assert client.get(f"/api/whatsapp/profiles/{sandbox.id}", headers=headers).status_code == 200


def test_with_the_module_off_even_the_admin_cannot_manage_numbers(client, org):
    """Numbers are guarded by settings power and by the WhatsApp module switch: 404 when off."""
    with organization_context(org.id):
        foundation_services.set_module_enabled(org.admin, "whatsapp", False)
        db.session.flush()
    response = client.post("/api/whatsapp/profiles", json={"provider": "sandbox",
                                                           "display_name": "X"},
                           headers=bearer(org.admin))
    assert assert_error(response, 404)
    assert _count(WhatsAppProfile, org.id) == 0


def test_a_deleted_number_leaves_the_list_and_answers_404(client, org, sandbox):
    """DELETE answers 204; the number is gone from the list and its page; the row stays for
    its conversations' history."""
    other = make_profile(org, "sandbox")
    headers = bearer(org.admin)

    assert client.delete(f"/api/whatsapp/profiles/{sandbox.id}", headers=headers).status_code == 204

    items = client.get("/api/whatsapp/profiles", headers=headers).get_json()
    assert items == {"items": [client.get(f"/api/whatsapp/profiles/{other.id}",
                                          headers=headers).get_json()], "next_cursor": None}
    assert_error(client.get(f"/api/whatsapp/profiles/{sandbox.id}", headers=headers), 404)
    assert _get(WhatsAppProfile, org.id, sandbox.id).is_deleted


def test_another_organizations_number_is_not_found(client, org, other_org):
    """Reading, connecting or deleting another organization's number answers 404."""
    theirs, their_org = make_profile(other_org, "web").id, other_org.id
    headers = bearer(org.admin)
    assert_error(client.get(f"/api/whatsapp/profiles/{theirs}", headers=headers), 404)
    assert_error(client.post("/api/whatsapp/connect", json={"profile_id": theirs},
                             headers=headers), 404)
    assert_error(client.delete(f"/api/whatsapp/profiles/{theirs}", headers=headers), 404)
    stored = _get(WhatsAppProfile, their_org, theirs)
    assert (stored.state, stored.is_deleted) == ("connected", False)


def test_connecting_a_linked_device_starts_pairing_and_returns_the_published_qr(client, org,
                                                                                app):
    """`web`: the state becomes pairing; the QR code is null until the supervisor publishes
    one in Redis, then it is returned as data."""
    device = make_profile(org, "web", state="disconnected")
    headers = bearer(org.admin)

    first = client.post("/api/whatsapp/connect", json={"profile_id": device.id}, headers=headers)
    assert first.get_json() == {"state": "pairing", "qr": None}

    app.extensions["crm.redis"].set(qr_key(device.id), "data:image/png;base64,iVBORw0KGgo=")
    again = client.post("/api/whatsapp/connect", json={"profile_id": device.id}, headers=headers)
    assert again.get_json() == {"state": "pairing", "qr": "data:image/png;base64,iVBORw0KGgo="}


def test_disconnecting_a_linked_device_forgets_its_session(client, org):
    """The answer shows the number disconnected; the stored session is gone."""
    device = make_profile(org, "web", secrets={"session": "c2Vzc2lvbg=="})
    response = client.post(f"/api/whatsapp/profiles/{device.id}/disconnect",
                           headers=bearer(org.admin))

    assert response.status_code == 200
    assert response.get_json()["state"] == "disconnected"
    assert _get(WhatsAppProfile, org.id, device.id).secrets is None


@pytest.mark.parametrize("body", [{}, {"profile_id": "1"}, {"profile_id": True},
                                  {"profile_id": -1}])
def test_connect_without_a_valid_profile_id_is_422(client, org, body):
    """A missing or malformed id is a 422 on profile_id, never a 404 or a 500."""
    response = client.post("/api/whatsapp/connect", json=body, headers=bearer(org.admin))
    assert assert_error(response, 422)["fields"].keys() == {"profile_id"}


# -- conversations -----------------------------------------------------------------------------

def _list(client, user, query: str = "") -> dict:
    response = client.get(f"/api/whatsapp/conversations{query}", headers=bearer(user))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_conversations_page_newest_first_through_equal_timestamps(client, org, sandbox):
    """The keyset cursor holds (last_message_at, id): conversations active at the same instant
    are neither skipped nor repeated across pages."""
    now = utcnow()
    same = [make_conversation(sandbox, last_message_at=now) for _ in range(3)]
    older = make_conversation(sandbox, last_message_at=now - timedelta(minutes=5))
    newest = make_conversation(sandbox, last_message_at=now + timedelta(minutes=5))
    make_conversation(sandbox, last_message_at=None)  # never written to: not in the inbox

    pages = walk_pages(client, "/api/whatsapp/conversations?limit=2", bearer(org.admin))
    assert all(set(item) == CONVERSATION_FIELDS for items in pages for item in items)
    seen = [item["id"] for items in pages for item in items]
    assert seen == [newest.id, *sorted((c.id for c in same), reverse=True), older.id]
    assert len(pages) == 3


def test_conversation_filters(client, org, sandbox):
    """scope=mine / unassigned, status and profile_id narrow the list."""
    agent = make_user(org, "agent")
    other_number = make_profile(org, "sandbox")
    mine = make_conversation(sandbox, assigned_user_id=org.admin.id)
    theirs = make_conversation(sandbox, assigned_user_id=agent.id, status="pending")
    nobodys = make_conversation(other_number, status="resolved")

    def ids(query: str) -> set[int]:
        return {item["id"] for item in _list(client, org.admin, query)["items"]}

    assert ids("") == ids("?scope=all") == {mine.id, theirs.id, nobodys.id}
    assert ids("?scope=mine") == {mine.id}
    assert ids("?scope=unassigned") == {nobodys.id}
    assert ids("?status=pending") == {theirs.id}
    assert ids(f"?profile_id={other_number.id}") == {nobodys.id}


def test_an_agent_lists_and_opens_only_conversations_assigned_to_them(client, org, sandbox):
    """With the unassigned queue closed to agents: whatever the scope asked for, an agent gets
    their own; another one is 404."""
    close_queue(org)
    agent = make_user(org, "agent")
    assigned = make_conversation(sandbox, assigned_user_id=agent.id)
    unassigned = make_conversation(sandbox)
    headers = bearer(agent)

    for scope in ("all", "unassigned", "mine"):
        assert [i["id"] for i in _list(client, agent, f"?scope={scope}")["items"]] == [
            assigned.id]
    assert client.get(f"/api/whatsapp/conversations/{assigned.id}",
                      headers=headers).status_code == 200
    assert_error(client.get(f"/api/whatsapp/conversations/{unassigned.id}", headers=headers), 404)
    assert_error(client.get(f"/api/whatsapp/conversations/{unassigned.id}/messages",
                            headers=headers), 404)


def test_search_finds_names_phones_and_message_text(client, org, sandbox):
    """Arabic letter variants, a local phone form and words of a message all find it."""
    ahmed = make_conversation(sandbox, phone="+966501234567", contact_name="أحمد القحطاني")
    other = make_conversation(sandbox, phone="+966559999999", contact_name="Sara")
    make_message(other, body="the invoice is late")

    def ids(term: str) -> list[int]:
        return [item["id"] for item in _list(client, org.admin, f"?search={term}")["items"]]

    assert ids("احمد") == [ahmed.id]
    assert ids("0501234567") == [ahmed.id]
    assert ids("INVOICE") == [other.id]
    assert ids("nothing-like-this") == []


@pytest.mark.parametrize(("query", "field"), [
    ("scope=everyone", "scope"), ("status=closed", "status"), ("profile_id=x", "profile_id"),
    ("profile_id=-3", "profile_id"), ("profile_id=" + "9" * 5000, "profile_id"),
    ("cursor=bm90LWEtY3Vyc29y", "cursor"), ("limit=0", "limit"),
    ("search=" + "a" * 201, "search"), ("search=a%00b", "search")])
def test_bad_list_parameters_are_422(client, org, query, field):
    """Each bad parameter answers 422 naming it (a NUL could not even reach PostgreSQL)."""
    response = client.get(f"/api/whatsapp/conversations?{query}", headers=bearer(org.admin))
    assert assert_error(response, 422, "validation_error")["fields"].keys() == {field}


def test_the_conversation_list_runs_the_same_queries_for_few_or_many(client, org, sandbox):
    """No query per row: 12 conversations on two numbers cost what 2 on one cost."""
    make_conversation(sandbox, assigned_user_id=org.admin.id)
    make_conversation(sandbox)
    headers = bearer(org.admin)

    def count() -> int:
        return len(client.get("/api/whatsapp/conversations", headers=headers)
                   .get_json()["items"])

    count()  # warm-up: first-request work is not per row
    with assert_max_queries(10) as few:
        assert count() == 2
    second = make_profile(org, "cloud")
    for n in range(10):
        make_conversation(second if n % 2 else sandbox, assigned_user_id=org.admin.id,
                          last_inbound_at=utcnow())
    with count_queries() as many:
        assert count() == 12
    assert len(many) == len(few), many


def test_a_thread_pages_back_from_the_newest_messages(client, org, conversation):
    """Each page is oldest to newest; next_cursor leads to older messages; the last page has
    none. A message deleted for everyone keeps its place without its text."""
    made = [make_message(conversation, body=f"m{n}") for n in range(5)]
    with organization_context(org.id):
        made[4].deleted_at = utcnow()
        db.session.flush()
    headers = bearer(org.admin)
    url = f"/api/whatsapp/conversations/{conversation.id}/messages?limit=2"

    first = client.get(url, headers=headers).get_json()
    second = client.get(url + f"&cursor={first['next_cursor']}", headers=headers).get_json()
    third = client.get(url + f"&cursor={second['next_cursor']}", headers=headers).get_json()

    assert all(set(item) == MESSAGE_FIELDS for item in first["items"])
    assert [i["body"] for i in first["items"]] == ["m3", ""]
    assert first["items"][1]["deleted_at"] is not None
    assert [i["body"] for i in second["items"]] == ["m1", "m2"]
    assert [i["body"] for i in third["items"]] == ["m0"]
    assert third["next_cursor"] is None


def test_assigning_transferring_and_unassigning(client, org, conversation):
    """assignee_id names an agent, then another; null unassigns."""
    first, second = make_user(org, "agent"), make_user(org, "manager")
    url = f"/api/whatsapp/conversations/{conversation.id}/assign"
    headers = bearer(org.admin)

    for assignee in (first.id, second.id, None):
        response = client.post(url, json={"assignee_id": assignee}, headers=headers)
        assert response.status_code == 200
        assert response.get_json()["assigned_user_id"] == assignee
        assert _get(Conversation, org.id, conversation.id).assigned_user_id == assignee


@pytest.mark.parametrize("assignee", ["member", "other organization", "missing", "text", "absent"])
def test_assigning_to_someone_who_cannot_answer_is_422(client, org, other_org, conversation,
                                                       assignee):
    """A member (read only), another organization's user, no one, a malformed or a missing id:
    422 on assignee_id, and the conversation keeps its assignee."""
    agent = make_user(org, "agent")
    with organization_context(org.id):
        conversation.assigned_user_id = agent.id
        db.session.flush()
    body = {"member": {"assignee_id": make_user(org, "member").id},
            "other organization": {"assignee_id": make_user(other_org, "agent").id},
            "missing": {"assignee_id": 2**63 - 1}, "text": {"assignee_id": "5"},
            "absent": {}}[assignee]
    response = client.post(f"/api/whatsapp/conversations/{conversation.id}/assign", json=body,
                           headers=bearer(org.admin))

    assert assert_error(response, 422)["fields"].keys() == {"assignee_id"}
    assert _get(Conversation, org.id, conversation.id).assigned_user_id == agent.id


def test_status_and_read(client, org, conversation):
    """A conversation is resolved; marking it read clears its unread count."""
    with organization_context(org.id):
        conversation.unread_count = 3
        make_message(conversation)
        db.session.flush()
    headers = bearer(org.admin)
    base = f"/api/whatsapp/conversations/{conversation.id}"

    resolved = client.post(f"{base}/status", json={"status": "resolved"}, headers=headers)
    read = client.post(f"{base}/read", headers=headers)

    assert resolved.get_json()["status"] == "resolved"
    assert read.get_json()["unread_count"] == 0
    assert _get(Conversation, org.id, conversation.id).unread_count == 0
    bad = client.post(f"{base}/status", json={"status": "closed"}, headers=headers)
    assert assert_error(bad, 422)["fields"].keys() == {"status"}
    assert _get(Conversation, org.id, conversation.id).status == "resolved"


def test_a_member_reads_the_inbox_but_changes_nothing(client, org, conversation):
    """whatsapp: read — GETs answer, every write is 403."""
    headers = bearer(make_user(org, "member"))
    base = f"/api/whatsapp/conversations/{conversation.id}"
    assert client.get(base, headers=headers).status_code == 200
    assert client.post(f"{base}/status", json={"status": "resolved"},
                       headers=headers).status_code == 403
    assert client.post("/api/whatsapp/send", json={"conversation_id": conversation.id,
                                                   "text": "hi"},
                       headers=headers).status_code == 403
    assert _count(Message, org.id) == 0


# -- sending -----------------------------------------------------------------------------------

def _send(client, user, **body):
    return client.post("/api/whatsapp/send", json=body, headers=bearer(user))


def test_a_text_is_queued_then_sent_by_the_outbox_job(client, app, org, conversation):
    """201 with the message `queued`; the job sends it (the sandbox then delivers it)."""
    response = _send(client, org.admin, conversation_id=conversation.id, text="  Hello!  ")

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == MESSAGE_FIELDS
    assert (body["status"], body["body"], body["direction"], body["sender_user_id"]) == (
        "queued", "Hello!", "out", org.admin.id)
    assert _get(Conversation, org.id, conversation.id).last_message_preview == "Hello!"

    run_jobs(app, queues=("whatsapp",))

    sent = client.get(f"/api/whatsapp/conversations/{conversation.id}/messages",
                      headers=bearer(org.admin)).get_json()["items"]
    assert [(m["id"], m["status"]) for m in sent] == [(body["id"], "delivered")]
    assert sent[0]["sent_at"]
    assert sent[0]["delivered_at"]


def test_a_phone_in_any_form_starts_one_conversation(client, org, sandbox):
    """profile_id and `to` start a conversation with the E.164 number; writing the same
    number another way continues it."""
    first = _send(client, org.admin, profile_id=sandbox.id, to="0501234567", text="one")
    second = _send(client, org.admin, profile_id=sandbox.id, to="+966 50 123 4567", text="two")
    third = _send(client, org.admin, profile_id=sandbox.id, to="٠٥٠١٢٣٤٥٦٧", text="three")

    assert first.status_code == second.status_code == third.status_code == 201
    conversation_ids = {r.get_json()["conversation_id"] for r in (first, second, third)}
    assert len(conversation_ids) == 1
    assert _get(Conversation, org.id, conversation_ids.pop()).contact_phone == "+966501234567"


def test_an_agent_who_starts_a_conversation_is_assigned_it(client, org, sandbox):
    """Otherwise they could not see their own conversation; an existing conversation they are
    not assigned stays out of reach (404, nothing sent) while the queue is closed to agents."""
    close_queue(org)
    agent = make_user(org, "agent")
    started = _send(client, agent, profile_id=sandbox.id, to="0501234567", text="hi")
    assert started.status_code == 201
    conversation = _get(Conversation, org.id, started.get_json()["conversation_id"])
    assert conversation.assigned_user_id == agent.id

    make_conversation(sandbox, phone="+966551112222")
    assert_error(_send(client, agent, profile_id=sandbox.id, to="0551112222", text="hi"), 404)
    assert _count(Message, org.id) == 1


C, P = "<conversation>", "<profile>"  # replaced by the test's conversation and number ids


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"conversation_id"}),
    ({"conversation_id": C, "profile_id": P, "to": "0501234567", "text": "x"}, {"to"}),
    ({"profile_id": P, "to": "not a phone", "text": "x"}, {"to"}),
    ({"to": "0501234567", "text": "x"}, {"profile_id"}),
    ({"conversation_id": "1", "text": "x"}, {"conversation_id"}),
    ({"conversation_id": C, "text": "   "}, {"text"}),
    ({"conversation_id": C, "text": "x" * 4097}, {"text"}),
    ({"conversation_id": C, "text": "a\x00b"}, {"text"}),
    ({"conversation_id": C, "text": 5}, {"text"}),
    ({"conversation_id": C, "text": "x", "template": {"name": "hello", "language": "en"}},
     {"text"}),
    ({"conversation_id": C, "template": "hello"}, {"template"}),
    ({"conversation_id": C, "template": {"name": "Hello World", "language": "english"}},
     {"template_name", "template_language"}),
    ({"conversation_id": C, "text": "x", "reply_to_message_id": "7"}, {"reply_to_message_id"}),
])
def test_a_bad_send_is_422_and_nothing_is_queued(client, org, sandbox, conversation, body,
                                                  fields):
    """Each malformed send names its field; no message is written."""
    ids = {C: conversation.id, P: sandbox.id}
    response = _send(client, org.admin, **{k: ids.get(v, v) if isinstance(v, str) else v
                                           for k, v in body.items()})

    assert assert_error(response, 422)["fields"].keys() == fields
    assert _count(Message, org.id) == 0


def test_a_reply_must_quote_a_message_of_the_same_conversation(client, org, sandbox,
                                                               conversation):
    """reply_to_message_id links the quoted message; one from elsewhere is a 422."""
    quoted = make_message(conversation)
    elsewhere = make_message(make_conversation(sandbox))

    ok = _send(client, org.admin, conversation_id=conversation.id, text="yes",
               reply_to_message_id=quoted.id)
    bad = _send(client, org.admin, conversation_id=conversation.id, text="yes",
                reply_to_message_id=elsewhere.id)

    assert ok.get_json()["reply_to_message_id"] == quoted.id
    assert assert_error(bad, 422)["fields"].keys() == {"reply_to_message_id"}


def test_outside_the_24_hour_window_only_a_template_goes(client, org):
    """Cloud: the customer last wrote two days ago, so a text is 422 with a clear message and
    the conversation shows window_open false; an approved template is queued."""
    cloud = make_profile(org, "cloud")
    conversation = make_conversation(cloud, last_inbound_at=utcnow() - timedelta(days=2))
    shown = client.get(f"/api/whatsapp/conversations/{conversation.id}",
                       headers=bearer(org.admin)).get_json()
    assert shown["window_open"] is False

    text = _send(client, org.admin, conversation_id=conversation.id, text="hello?")
    error = assert_error(text, 422)
    assert error["fields"]["text"] == arabic(
        "The 24-hour window has closed: only an approved template can be sent until the "
        "customer writes.")

    template = _send(client, org.admin, conversation_id=conversation.id,
                     template={"name": "order_update", "language": "ar",
                               "parameters": ["1234"]})
    assert template.status_code == 201
    assert (template.get_json()["type"], template.get_json()["body"]) == (
        "template", "order_update")
    assert _count(Message, org.id) == 1


def _upload(client, user, conversation_id: int, data: bytes, filename: str, mimetype: str,
            **fields):
    return client.post("/api/whatsapp/send", headers=bearer(user),
                       content_type="multipart/form-data",
                       data={"conversation_id": str(conversation_id),
                             "file": (io.BytesIO(data), filename, mimetype), **fields})


def test_an_image_is_sent_with_its_caption(client, org, conversation):
    """multipart/form-data: the message is an image with the file's media details."""
    response = _upload(client, org.admin, conversation.id, PNG, "receipt.png", "image/png",
                       caption="Your receipt")

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["type"], body["body"]) == ("image", "Your receipt")
    assert body["media"] == {"mime_type": "image/png", "filename": "receipt.png",
                             "size": len(PNG), "url": f"/inbox/messages/{body['id']}/media"}
    served = client.get(body["media"]["url"], headers=bearer(org.admin))
    assert (served.status_code, served.data) == (200, PNG)


@pytest.mark.parametrize(("data", "filename", "mimetype", "fields", "message"), [
    (b"MZ\x90\x00", "setup.exe", "application/x-msdownload", {},
     ("This type of file cannot be sent on WhatsApp.", {})),
    (PNG + b"\x00" * (5 * 1024 * 1024), "big.png", "image/png", {},
     ("The file is too large: at most %(mb)d MB.", {"mb": 5})),
    (b"", "empty.png", "image/png", {}, ("The file is empty.", {})),
    (PNG, "a.png", "image/png", {"caption": "x" * 1025}, None),
], ids=["type", "size", "empty", "caption"])
def test_an_upload_outside_whatsapps_limits_is_422(client, org, conversation, data, filename,
                                                    mimetype, fields, message):
    """Type, size, emptiness and caption length are checked with a clear error."""
    response = _upload(client, org.admin, conversation.id, data, filename, mimetype, **fields)

    error = assert_error(response, 422)
    if message:
        assert error["fields"]["file"] == arabic(message[0], **message[1])
    else:
        assert error["fields"].keys() == {"caption"}
    assert _count(Message, org.id) == 0


def test_forwarding_copies_a_message_into_another_conversation(client, org, sandbox,
                                                               conversation):
    """201 with a forwarded copy in the target conversation."""
    original = make_message(conversation, body="the address is ...")
    target = make_conversation(sandbox)
    response = client.post("/api/whatsapp/forward", headers=bearer(org.admin),
                           json={"message_id": original.id, "conversation_id": target.id})

    assert response.status_code == 201
    body = response.get_json()
    assert (body["conversation_id"], body["body"], body["is_forwarded"]) == (
        target.id, "the address is ...", True)


def test_forwarding_another_organizations_message_is_404(client, org, other_org, conversation):
    """The message is looked up in the caller's organization only."""
    theirs = make_message(make_conversation(make_profile(other_org, "sandbox")))
    response = client.post("/api/whatsapp/forward", headers=bearer(org.admin),
                           json={"message_id": theirs.id, "conversation_id": conversation.id})
    assert_error(response, 404)
    assert _count(Message, org.id) == 0


def test_editing_and_deleting_a_sent_message(client, org, conversation):
    """Where the channel allows it: the text changes (edited_at), then the message is deleted
    for everyone (deleted_at, no text)."""
    sent = make_message(conversation, "out", body="See you at 5")
    headers = bearer(org.admin)

    edited = client.put("/api/whatsapp/message", json={"message_id": sent.id,
                                                       "text": "See you at 6"}, headers=headers)
    assert edited.status_code == 200
    assert (edited.get_json()["body"], bool(edited.get_json()["edited_at"])) == (
        "See you at 6", True)

    deleted = client.delete("/api/whatsapp/message", json={"message_id": sent.id},
                            headers=headers)
    assert deleted.status_code == 200
    assert (deleted.get_json()["body"], bool(deleted.get_json()["deleted_at"])) == ("", True)
    assert _get(Message, org.id, sent.id).deleted_at is not None


def test_a_cloud_number_cannot_edit_or_delete(client, org):
    """The Cloud API has no such calls: 422, and the message is unchanged."""
    conversation = make_conversation(make_profile(org, "cloud"), last_inbound_at=utcnow())
    sent = make_message(conversation, "out", body="original")
    headers = bearer(org.admin)

    edit = client.put("/api/whatsapp/message", json={"message_id": sent.id, "text": "new"},
                      headers=headers)
    delete = client.delete("/api/whatsapp/message", json={"message_id": sent.id},
                           headers=headers)

    assert assert_error(edit, 422)["fields"].keys() == {"message_id"}
    assert assert_error(delete, 422)["fields"].keys() == {"message_id"}
    stored = _get(Message, org.id, sent.id)
    assert (stored.body, stored.edited_at, stored.deleted_at) == ("original", None, None)


def test_only_a_failed_message_is_retried(client, org, conversation):
    """A failed message is queued again with its error cleared; a sent one is a 409."""
    failed = make_message(conversation, "out", status="failed", error_code="130429",
                          error_message="Rate limit hit", provider_message_id=None)
    sent = make_message(conversation, "out")
    headers = bearer(org.admin)

    retried = client.post(f"/api/whatsapp/messages/{failed.id}/retry", headers=headers)
    assert retried.status_code == 200
    assert (retried.get_json()["status"], retried.get_json()["error_code"]) == ("queued", None)
    assert_error(client.post(f"/api/whatsapp/messages/{sent.id}/retry", headers=headers), 409)
    assert _get(Message, org.id, sent.id).status == "sent"


def test_inbound_media_has_no_url_until_its_file_is_stored(client, org, conversation):
    """The download job fetches an inbound file later; until then `url` is null."""
    make_message(conversation, type="image", body="",
                 content={"media_id": "1013859600285441", "mime_type": "image/jpeg"})
    items = client.get(f"/api/whatsapp/conversations/{conversation.id}/messages",
                       headers=bearer(org.admin)).get_json()["items"]
    assert items[0]["media"] == {"mime_type": "image/jpeg", "filename": None, "size": None,
                                 "url": None}


def test_an_upload_whose_name_holds_a_nul_is_422(client, org, conversation):
    """PostgreSQL cannot store a NUL (the file name goes into the message's content)."""
    response = _upload(client, org.admin, conversation.id, PNG, "a\x00.png", "image/png")
    assert assert_error(response, 422)["fields"].keys() == {"file"}
    assert _count(Message, org.id) == 0
