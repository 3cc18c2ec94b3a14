"""Two people assigning one conversation, or changing its status: the second is told, never
silently overwrites the first.

The API answers a conversation's version as its ETag; assign and status with an If-Match of an
older version answer 412 with the conversation as it is now. The inbox's panel forms carry the
version and, when someone acted first, say who and offer to go ahead anyway. New messages and
unread counts are not edits: they leave the version alone.
"""

from __future__ import annotations

import re

import pytest

from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp import services
from crm.whatsapp.channels.base import InboundMessage
from crm.whatsapp.models import Conversation
from tests.api import assert_error
from tests.factories import bearer, login, make_org, make_user
from tests.foundation import HTMX
from tests.whatsapp.factories import make_conversation, make_profile


def _get(org_id: int, conversation_id: int) -> Conversation:
    with organization_context(org_id):
        return db.session.get(Conversation, conversation_id, populate_existing=True)


def _named(org, name: str, role: str = "manager"):
    user = make_user(org, role)
    with organization_context(org.id):
        user.full_name = name
        db.session.flush()
    return user


@pytest.fixture
def org():
    """An organization working in English, so the tests read the messages they expect."""
    return make_org(language="en")


@pytest.fixture
def conversation(org):
    return make_conversation(make_profile(org, "sandbox"), contact_name="Fatima")


@pytest.fixture
def sara(org):
    return _named(org, "سارة")


@pytest.fixture
def omar(org):
    return _named(org, "عمر", "agent")


# -- the API ----------------------------------------------------------------------------------

def test_a_conversation_answers_its_version_as_a_strong_etag(client, org, conversation, omar):
    """GET answers ETag "1"; an assignment makes it "2" and names who made it."""
    url = f"/api/whatsapp/conversations/{conversation.id}"
    headers = bearer(org.admin)

    shown = client.get(url, headers=headers)
    assert (shown.headers["ETag"], shown.get_json()["version"]) == ('"1"', 1)

    assigned = client.post(f"{url}/assign", json={"assignee_id": omar.id},
                           headers={**headers, "If-Match": '"1"'})
    assert assigned.status_code == 200
    assert assigned.headers["ETag"] == '"2"'
    assert (assigned.get_json()["version"], assigned.get_json()["edited_by_id"]) == (
        2, org.admin.id)


def test_a_stale_assignment_is_412_with_the_current_conversation(client, org, conversation,
                                                                 sara, omar):
    """Both read version 1; سارة assigns عمر; the admin's assignment naming version 1 is
    refused with 412 and the conversation as سارة left it."""
    url = f"/api/whatsapp/conversations/{conversation.id}/assign"
    first = client.post(url, json={"assignee_id": omar.id},
                        headers={**bearer(sara), "If-Match": '"1"'})
    assert first.status_code == 200

    second = client.post(url, json={"assignee_id": sara.id},
                         headers={**bearer(org.admin), "If-Match": '"1"'})

    assert_error(second, 412, "stale_version")
    current = second.get_json()["current"]
    assert (current["assigned_user_id"], current["version"], current["edited_by_id"]) == (
        omar.id, 2, sara.id)
    assert second.headers["ETag"] == '"2"'
    assert _get(org.id, conversation.id).assigned_user_id == omar.id


def test_a_stale_status_change_is_412(client, org, conversation, sara):
    url = f"/api/whatsapp/conversations/{conversation.id}/status"
    assert client.post(url, json={"status": "pending"}, headers=bearer(sara)).status_code == 200

    stale = client.post(url, json={"status": "resolved"},
                        headers={**bearer(org.admin), "If-Match": '"1"'})

    assert stale.get_json()["current"]["status"] == "pending"
    assert_error(stale, 412, "stale_version")
    assert _get(org.id, conversation.id).status == "pending"
    without = client.post(url, json={"status": "resolved"}, headers=bearer(org.admin))
    assert without.status_code == 200


def test_new_messages_and_reading_them_keep_the_version(client, org, conversation):
    """A message received (unread count, preview, a resolved conversation reopened) and
    marking it read are not edits."""
    with organization_context(org.id):
        conversation.status = "resolved"
        services.receive_inbound(conversation.profile, InboundMessage(
            provider_message_id="wamid.conflict-1", type="text", timestamp=utcnow(),
            contact_phone=conversation.contact_phone, contact_name="Fatima",
            body="Hello again"))
        db.session.flush()
    headers = bearer(org.admin)
    url = f"/api/whatsapp/conversations/{conversation.id}"
    assert client.post(f"{url}/read", headers=headers).status_code == 200

    shown = client.get(url, headers=headers)
    assert shown.get_json()["status"] == "open"
    assert shown.headers["ETag"] == '"1"'


def test_the_document_describes_if_match_on_assign_and_status(client):
    document = client.get("/api/openapi.json").get_json()
    for action in ("assign", "status"):
        operation = document["paths"][
            f"/api/whatsapp/conversations/{{conversation_id}}/{action}"]["post"]
        assert "If-Match" in [p["name"] for p in operation["parameters"]]
        assert "412" in operation["responses"]
        assert "ETag" in operation["responses"]["200"]["headers"]


# -- the contact panel -----------------------------------------------------------------------

def _panel(client, conversation) -> str:
    response = client.get(f"/inbox/conversations/{conversation.id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _versions(html: str) -> list[str]:
    return re.findall(r'<input type="hidden" name="version" value="(\d+)">', html)


def test_a_stale_assignment_in_the_inbox_says_who_assigned_whom(client, org, conversation,
                                                                sara, omar):
    """The panel was opened at version 1; سارة assigned عمر meanwhile. Assigning answers 409
    with "Already assigned to عمر by سارة a moment ago" and an "Assign anyway" that carries the
    choice and the current version; nothing changes until it is used."""
    login(client, org.admin)
    assert set(_versions(_panel(client, conversation))) == {"1"}
    with organization_context(org.id):
        services.assign_conversation(db.session.get(Conversation, conversation.id), omar.id,
                                     sara)
        db.session.flush()
    url = f"/inbox/conversations/{conversation.id}/assign"

    refused = client.post(url, data={"assignee_id": org.admin.id, "version": "1"}, headers=HTMX)

    assert refused.status_code == 409
    panel = refused.get_data(as_text=True)
    assert "Already assigned to <bdi>عمر</bdi> by <bdi>سارة</bdi> a moment ago." in panel
    anyway = panel[panel.index('class="conflict"'):]
    assert f'name="assignee_id" value="{org.admin.id}"' in anyway
    assert '<input type="hidden" name="version" value="2">' in anyway
    assert ">Assign anyway</button>" in anyway
    assert _get(org.id, conversation.id).assigned_user_id == omar.id

    done = client.post(url, data={"assignee_id": org.admin.id, "version": "2"}, headers=HTMX)

    assert done.status_code == 200
    assert _get(org.id, conversation.id).assigned_user_id == org.admin.id
    assert set(_versions(done.get_data(as_text=True))) == {"3"}


def test_a_stale_status_change_in_the_inbox_says_who_changed_it(client, org, conversation,
                                                               sara):
    login(client, org.admin)
    with organization_context(org.id):
        services.set_status(db.session.get(Conversation, conversation.id), "pending", sara)
        db.session.flush()

    refused = client.post(f"/inbox/conversations/{conversation.id}/status",
                          data={"status": "resolved", "version": "1"}, headers=HTMX)

    assert refused.status_code == 409
    panel = refused.get_data(as_text=True)
    assert "Changed to Pending by <bdi>سارة</bdi> a moment ago." in panel
    assert ">Change anyway</button>" in panel
    assert _get(org.id, conversation.id).status == "pending"


def test_a_stale_assignment_without_htmx_goes_back_to_the_conversation_saying_so(
        client, org, conversation, sara, omar):
    """A plain form post is redirected to the conversation with the notice flashed."""
    login(client, org.admin)
    with organization_context(org.id):
        services.assign_conversation(db.session.get(Conversation, conversation.id), omar.id,
                                     sara)
        db.session.flush()

    refused = client.post(f"/inbox/conversations/{conversation.id}/assign",
                          data={"assignee_id": org.admin.id, "version": "1"})

    assert refused.status_code == 303
    page = client.get(refused.headers["Location"]).get_data(as_text=True)
    assert "Already assigned to" in page
    assert _get(org.id, conversation.id).assigned_user_id == omar.id
