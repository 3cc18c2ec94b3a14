"""Provider payloads are data, never our objects: whoever signs a webhook (anyone may register
and hold a cloud profile's app secret) can make no provider key reach an internal one, and a
stored path serves only its own organization's files."""

from __future__ import annotations

import json
import os

import pytest

from crm.extensions import db
from crm.foundation.models import User
from crm.tenancy import organization_context
from crm.whatsapp import media
from crm.whatsapp.models import WhatsAppProfile
from tests.factories import login, make_org
from tests.whatsapp.factories import (
    make_conversation,
    make_media_message,
    make_message,
    make_profile,
    png,
)
from tests.whatsapp.test_cloud import PHONE_NUMBER_ID, Number, deliver, messages

CONTACT = "966501234567"
SECRET = b"the victim's private scan"
MARK = "HOSTILE"
# Every key our code reads from Message.content (crm/, templates/), each with a hostile value.
HOSTILE = {
    "path": f"1/2025-06/{MARK}.jpg", "size": f"{MARK}-size", "mime_type": f"text/html; {MARK}",
    "filename": f"{MARK}.html", "reactions": {"agent": MARK}, "web_media": MARK,
    "template": {"name": MARK, "language": MARK}, "original_type": MARK, "media_id": MARK,
    "media_error": MARK, "raw": MARK, "emoji": MARK, "message_id": MARK, "latitude": MARK,
    "longitude": MARK, "contacts": MARK, "name": MARK, "components": MARK, "language": MARK,
}


def delivery(*messages_: dict) -> bytes:
    """A Meta delivery of `messages_` from one contact to PHONE_NUMBER_ID."""
    return json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881",
                         "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": CONTACT}],
            "messages": list(messages_)}}]}]}).encode()


def message(n: int, kind: str, provider_object: object = None, **fields) -> dict:
    """Message `n` of type `kind`; the hostile keys ride on the message object itself too."""
    body = {**HOSTILE, "from": CONTACT, "id": f"wamid.KEYS.{n}", "timestamp": "1749417100",
            "type": kind, **fields}
    if provider_object is not None:
        body[kind] = provider_object
    return body


def hostile(**provider_fields) -> dict:
    """A provider object: Meta's own fields, and every internal key where Meta has none."""
    return {**HOSTILE, **provider_fields}


def profile_of(number: Number) -> WhatsAppProfile:
    with organization_context(number.org_id):
        return db.session.get(WhatsAppProfile, number.profile_id)


def admin_of(number: Number) -> User:
    with organization_context(number.org_id):
        return db.session.get(User, number.admin_id)


@pytest.fixture
def attacker():
    """An organization that registered and signs its own webhooks."""
    return Number()


@pytest.fixture
def victims_path():
    """Another organization's stored image: its path relative to the media root."""
    victim = make_org()
    conversation = make_conversation(make_profile(victim, provider="sandbox"))
    return make_media_message(conversation, data=png() + SECRET).content["path"]


def media_of(client, message_id: int):
    return client.get(f"/inbox/messages/{message_id}/media")


# -- a forged location -------------------------------------------------------------------------

def test_a_forged_location_never_serves_another_organizations_file(client, attacker,
                                                                   victims_path):
    """A location naming the victim's stored file as its `path` keeps only a location's own
    fields; the media route answers 404, never the victim's bytes."""
    forged = {"latitude": 24.7136, "longitude": 46.6753, "name": "Kingdom Centre",
              "path": victims_path, "mime_type": "image/png", "size": 5}

    assert deliver(client, attacker.url, delivery(message(1, "location", forged))).status_code \
        == 200

    [location] = messages(attacker.org_id)
    assert location.content == {"latitude": 24.7136, "longitude": 46.6753,
                                "name": "Kingdom Centre"}
    login(client, admin_of(attacker))
    answer = media_of(client, location.id)
    assert answer.status_code == 404
    assert SECRET not in answer.get_data()


# Paths a stored message of organization `own` may carry, none inside its own folder; `victims`
# is another organization's stored file.
OUTSIDE = {
    "another organization's": lambda own, victims: victims,
    "climbing out of its own folder": lambda own, victims: f"{own}/../{victims}",
    "absolute": lambda own, victims: str(media.root() / victims),
}


@pytest.mark.parametrize("case", OUTSIDE)
def test_a_stored_path_outside_the_messages_organization_is_never_served(
        client, attacker, victims_path, case):
    """Whatever a message's stored `path` says, only a file under `<media root>/<its
    organization>/` is served: another organization's, `..`, absolute paths are 404."""
    conversation = make_conversation(profile_of(attacker))
    forged = make_message(conversation, type="image", body="", content={
        "path": OUTSIDE[case](attacker.org_id, victims_path),
        "mime_type": "image/png"})
    login(client, admin_of(attacker))

    answer = media_of(client, forged.id)

    assert answer.status_code == 404
    assert SECRET not in answer.get_data()


def test_a_symlink_in_the_organizations_folder_is_not_followed_out_of_it(
        client, attacker, victims_path):
    """A link inside the organization's own folder that points at another organization's file
    is refused: the path is checked once resolved."""
    conversation = make_conversation(profile_of(attacker))
    link = media.root() / str(attacker.org_id) / "2025-06" / "link.png"
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(media.root() / victims_path, link)
    forged = make_message(conversation, type="image", body="", content={
        "path": f"{attacker.org_id}/2025-06/link.png", "mime_type": "image/png"})
    login(client, admin_of(attacker))

    try:
        answer = media_of(client, forged.id)
    finally:
        link.unlink()

    assert answer.status_code == 404
    assert SECRET not in answer.get_data()


def test_a_stored_path_that_is_not_text_is_not_served(client, attacker):
    """A `path` of the wrong type (older rows, a bug) is no file: 404, not an error."""
    conversation = make_conversation(profile_of(attacker))
    odd = make_message(conversation, type="image", body="", content={"path": ["a", "b"]})
    login(client, admin_of(attacker))

    assert media_of(client, odd.id).status_code == 404


def test_the_organizations_own_file_is_served(client, attacker):
    """The check lets the organization's own stored file through."""
    mine = make_media_message(make_conversation(profile_of(attacker)), data=png())
    login(client, admin_of(attacker))

    answer = media_of(client, mine.id)

    assert answer.status_code == 200
    assert answer.get_data() == png()


# -- every field of every type ---------------------------------------------------------------

MEDIA_KEYS = {"media_id", "mime_type", "sha256"}
# Each message ingest understands, as Meta shapes it, with the content keys ingest may keep.
WALK = [
    ("text", message(1, "text", hostile(body="Hello")), set()),
    ("image", message(2, "image", hostile(id="1003383421387201", caption="A photo",
                                          mime_type="image/jpeg", sha256="ab12")), MEDIA_KEYS),
    ("video", message(3, "video", hostile(id="1003383421387202", caption="A clip",
                                          mime_type="video/mp4", sha256="ab12")), MEDIA_KEYS),
    ("audio", message(4, "audio", hostile(id="1003383421387203", mime_type="audio/ogg",
                                          sha256="ab12", voice=True)),
     MEDIA_KEYS | {"voice"}),
    ("document", message(5, "document", hostile(
        id="1003383421387204", caption="Invoice", filename="invoice.pdf",
        mime_type="application/pdf", sha256="ab12")), MEDIA_KEYS | {"filename"}),
    ("sticker", message(6, "sticker", hostile(id="1003383421387205", mime_type="image/webp",
                                              sha256="ab12", animated=False)),
     MEDIA_KEYS | {"animated"}),
    ("location", message(7, "location", hostile(
        latitude=24.7136, longitude=46.6753, name="Kingdom Centre",
        address="King Fahd Road, Riyadh", url="https://example.com/kingdom-centre")),
     {"latitude", "longitude", "name", "address", "url"}),
    ("contacts", message(8, "contacts", [hostile(
        name={"formatted_name": "Layla Hassan", "first_name": "Layla"},
        phones=[{"phone": "+966 50 765 4321", "type": "CELL", "wa_id": "966507654321"}])]),
     {"contacts"}),
    ("reaction", message(9, "reaction", hostile(message_id="wamid.KEYS.1", emoji="👍")),
     {"message_id", "emoji"}),
    ("button_reply", message(10, "interactive", hostile(
        type="button_reply", button_reply=hostile(id="confirm-order", title="Confirm"))),
     {"reply_type", "id", "title"}),
    ("list_reply", message(11, "interactive", hostile(
        type="list_reply", list_reply=hostile(id="size-large", title="Large",
                                              description="Fits 4 people"))),
     {"reply_type", "id", "title", "description"}),
    ("other interactive", message(12, "interactive", hostile(
        type="nfm_reply", nfm_reply=hostile(name="flow", body="Sent", response_json="{}"))),
     {"reply_type", "raw"}),
    ("button", message(13, "button", hostile(payload="STOP_PROMOTIONS", text="Stop")),
     {"text", "payload"}),
    ("unsupported", message(14, "unsupported", errors=[{
        "code": 131051, "title": "Message type unknown"}]), {"original_type", "raw"}),
    ("unknown", message(15, "order", hostile(catalog_id="1", product_items=[])),
     {"original_type", "raw"}),
]


def test_no_provider_key_of_any_message_type_reaches_an_internal_one(client, attacker):
    """Every message type ingest understands, its provider object (and the message object
    around it) carrying every key our code reads from a message's content with a hostile
    value: the stored content holds only the keys ingest derives from Meta's own fields, no
    hostile value outside the `raw` copy of what it could not read, and the page shows none."""
    deliver(client, attacker.url, delivery(*(body for _case, body, _keys in WALK)))

    stored = messages(attacker.org_id)
    assert [m.provider_message_id for m in stored] == [body["id"] for _c, body, _k in WALK]
    for (case, body, keys), kept in zip(WALK, stored, strict=True):
        content = dict(kept.content)
        if case == "text":
            # The reaction in the same delivery is shown on it: written by our code alone.
            assert content.pop("reactions") == {"contact": "👍"}, case
        assert set(content) <= keys, (case, sorted(set(content) - keys))
        read = {key: value for key, value in content.items() if key != "raw"}
        assert MARK not in json.dumps(read, ensure_ascii=False), (case, read)
        if keys >= MEDIA_KEYS:
            assert content["media_id"] == body[body["type"]]["id"], case
        if "original_type" in keys:
            assert content["original_type"] == body["type"], case
    login(client, admin_of(attacker))
    page = client.get(f"/inbox/conversations/{stored[0].conversation_id}")
    assert page.status_code == 200
    assert MARK not in page.get_data(as_text=True)


def test_a_reaction_replaces_reactions_forged_before_provider_keys_were_filtered(
        client, attacker):
    """A message stored with a provider's `reactions` (before ingest kept known keys only) still
    takes a reaction: ours replace whatever was not a mapping, and the delivery is applied."""
    conversation = make_conversation(profile_of(attacker), phone=f"+{CONTACT}")
    make_message(conversation, provider_message_id="wamid.OLD", type="location",
                 content={"latitude": 1.0, "longitude": 2.0, "reactions": MARK})

    deliver(client, attacker.url, delivery(message(1, "reaction", {
        "message_id": "wamid.OLD", "emoji": "👍"})))

    old, reaction = messages(attacker.org_id)
    assert old.content["reactions"] == {"contact": "👍"}
    assert reaction.content == {"message_id": "wamid.OLD", "emoji": "👍"}
