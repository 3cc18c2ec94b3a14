"""Hostile provider input: a delivery nested too deeply is refused at the webhook; text that
PostgreSQL cannot store (NUL, a lone surrogate) is replaced with U+FFFD wherever we keep a
provider's text, so the message appears and its delivery is applied once, not failed five
times and lost."""

from __future__ import annotations

import io
import json

import pytest
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage
from sqlalchemy import select

from crm.extensions import db
from crm.tenancy import organization_context
from crm.whatsapp import services
from crm.whatsapp.channels.web import inbound_from_event
from crm.whatsapp.models import Message, WhatsAppProfile
from tests.factories import login, make_org
from tests.whatsapp.factories import make_conversation, make_message, make_profile, png
from tests.whatsapp.fake_neonize import message_event
from tests.whatsapp.test_cloud import (
    PLATFORM_SECRET,
    Number,
    conversations,
    deliver,
    messages,
    payload,
)
from tests.whatsapp.test_ingest import kept

HOSTILE = "a\x00b\ud800c"  # a NUL and a lone surrogate (JSON: "a\u0000b\ud800c")
CLEAN = "a\ufffdb\ufffdc"


@pytest.fixture
def number():
    return Number()


def delivery(message: dict, contact_name: str = "Sheena Nelson") -> bytes:
    """Meta's delivery of one message from the contact of text.json, as JSON escapes it."""
    body = json.loads(payload("text"))
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["profile"]["name"] = contact_name
    value["messages"] = [{"from": "16505551234", "id": "wamid.HOSTILE1",
                          "timestamp": "1749416383", **message}]
    return json.dumps(body).encode()


def storable(*values: object) -> str:
    """`values` as the text PostgreSQL would be given: it holds no NUL and is valid UTF-8."""
    text = json.dumps(values, ensure_ascii=False)
    text.encode("utf-8")  # a lone surrogate raises here
    assert "\x00" not in text
    return text


# -- nesting -----------------------------------------------------------------------------------

@pytest.mark.parametrize("door", ["profile", "platform"])
def test_a_delivery_nested_too_deeply_is_400_and_nothing_is_kept(app, client, monkeypatch,
                                                                 number, door):
    """10,000 levels of nesting, signed, answer the webhook's own 400; nothing is kept."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)
    body = (b'{"object": "whatsapp_business_account", "entry": '
            + b"[" * 10_000 + b"]" * 10_000 + b"}")
    url, secret = ((number.url, "the-profiles-app-secret") if door == "profile"
                   else ("/webhooks/whatsapp", PLATFORM_SECRET))

    response = deliver(client, url, body, secret, apply=False)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_request"
    assert "nested too deeply" in error["message"]
    assert kept(number.org_id) == []


# -- text PostgreSQL cannot store ----------------------------------------------------------------

def test_a_nul_in_a_text_message_is_replaced_and_the_delivery_applied_once(client, number):
    """A text holding a NUL appears, the NUL shown as U+FFFD; the delivery is done with."""
    response = deliver(client, number.url,
                       delivery({"type": "text", "text": {"body": "Hi\x00there"}}))

    assert response.status_code == 200
    assert [message.body for message in messages(number.org_id)] == ["Hi\ufffdthere"]
    assert kept(number.org_id) == []


def test_a_lone_surrogate_in_a_text_and_a_name_is_replaced(client, number):
    r"""Meta's "\ud83d" cut from its pair (a broken emoji) is kept as U+FFFD, in the text and
    in the contact's name."""
    response = deliver(client, number.url, delivery(
        {"type": "text", "text": {"body": "Hello \ud83d"}}, contact_name=HOSTILE))

    assert response.status_code == 200
    assert [message.body for message in messages(number.org_id)] == ["Hello \ufffd"]
    assert [c.contact_name for c in conversations(number.org_id)] == [CLEAN]
    assert kept(number.org_id) == []


@pytest.mark.parametrize("message", [
    {"type": "document", "document": {"id": "4412", "mime_type": "application/pdf",
                                      "filename": HOSTILE, "caption": HOSTILE}},
    {"type": "image", "image": {"id": "4413", "mime_type": "image/jpeg", "caption": HOSTILE,
                                "sha256": HOSTILE}},
    {"type": "location", "location": {"latitude": 24.7, "longitude": 46.7, "name": HOSTILE,
                                      "address": HOSTILE, "url": HOSTILE}},
    {"type": "contacts", "contacts": [{"name": {"formatted_name": HOSTILE, HOSTILE: HOSTILE},
                                       "phones": [{"phone": HOSTILE, "type": HOSTILE}]}]},
    {"type": "interactive", "interactive": {"type": "button_reply",
                                            "button_reply": {"id": HOSTILE, "title": HOSTILE}}},
    {"type": "interactive", "interactive": {"type": HOSTILE, HOSTILE: {HOSTILE: HOSTILE}}},
    {"type": "button", "button": {"text": HOSTILE, "payload": HOSTILE}},
    {"type": "reaction", "reaction": {"message_id": "wamid.EARLIER", "emoji": HOSTILE}},
    {"type": "poll", "poll": {"question": HOSTILE, HOSTILE: [HOSTILE]}},
], ids=["document", "image", "location", "contacts", "interactive", "interactive unknown",
        "button", "reaction", "unsupported"])
def test_every_text_of_a_message_is_kept_storable(client, number, message):
    """Captions, file names, places, contact cards, replies and kept-whole unknown messages:
    every text (and key) is stored with NUL and lone surrogates replaced."""
    response = deliver(client, number.url, delivery(message))

    assert response.status_code == 200
    assert kept(number.org_id) == []
    [stored] = messages(number.org_id)
    assert CLEAN in storable(stored.body, stored.content)


def test_the_error_of_a_failed_status_is_kept_storable(client, number):
    """Meta's words on why a message failed are kept, NUL and lone surrogates replaced."""
    with organization_context(number.org_id):
        profile = db.session.get(WhatsAppProfile, number.profile_id)
        sent = make_message(make_conversation(profile), "out", provider_message_id="wamid.OUT1")
    body = json.loads(payload("status_failed", wamid="wamid.OUT1", our_id=str(sent.id)))
    [error] = body["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"]
    error.update(title=HOSTILE, message=HOSTILE, error_data={"details": HOSTILE})

    response = deliver(client, number.url, json.dumps(body).encode())

    assert response.status_code == 200
    assert kept(number.org_id) == []
    failed = number.get(Message, sent.id)
    assert (failed.status, failed.error_message) == ("failed", CLEAN)


def test_a_linked_device_message_with_a_nul_is_stored_replaced(app):
    """The linked-device channel's text (a NUL in the text and in the sender's name) is
    stored like the cloud's, replaced."""
    org = make_org()
    profile = make_profile(org, "web")
    inbound = inbound_from_event(message_event(E2EMessage(conversation="Hi\x00there"),
                                               push_name="Sa\x00ra"))

    with organization_context(org.id):
        message = services.receive_inbound(profile, inbound)
        db.session.flush()
        assert (message.body, message.conversation.contact_name) == ("Hi\ufffdthere",
                                                                     "Sa\ufffdra")


def test_the_sandbox_customers_file_name_with_a_nul_is_stored_replaced(client):
    """The sandbox's simulated customer goes through the same door: a NUL in the name of the
    image sent is replaced, and the message appears."""
    org = make_org(language="en")
    profile = make_profile(org, "sandbox")
    login(client, org.admin)

    response = client.post(f"/whatsapp/sandbox/{profile.id}/messages",
                           content_type="multipart/form-data", data={
                               "phone": "0501234567", "name": "Sara", "text": "This one",
                               "file": (io.BytesIO(png()), "sh\x00oe.png", "image/png")})

    assert response.status_code in (200, 303), response.get_data(as_text=True)[:300]
    with organization_context(org.id):
        message = db.session.scalar(select(Message))
        assert message.content["filename"] == "sh\ufffdoe.png"
