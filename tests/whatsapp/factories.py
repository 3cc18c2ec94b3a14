"""Factories for the WhatsApp module's tests: profiles made directly, with encrypted secrets."""

from __future__ import annotations

import itertools
import struct
import zlib

from sqlalchemy import select

from crm.crypto import encrypt
from crm.extensions import db
from crm.foundation.models import Organization
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp import media
from crm.whatsapp.models import (
    CannedReply,
    Conversation,
    InboxSettings,
    Message,
    WhatsAppProfile,
)
from crm.whatsapp.profiles import new_verify_token
from tests.factories import unique_phone

_sequence = itertools.count(1)


def make_profile(org: Organization, provider: str = "cloud", *,
                 phone_number_id: str | None = None, access_token: str | None = None,
                 app_secret: str | None = None, secrets: dict | None = None,
                 **fields) -> WhatsAppProfile:
    """A WhatsApp number of `org`. Cloud profiles get a phone number id, an access token and an
    app secret unless given, and are proven (Graph answered for the token, Meta verified the
    webhook) unless `verified_at` / `webhook_verified_at` say otherwise; `secrets` replaces the
    encrypted secrets outright (e.g. a web session). Other columns (display_name, state,
    phone_number...) may be passed as keywords."""
    n = next(_sequence)
    if secrets is None and provider == "cloud":
        secrets = {"access_token": access_token or f"token-{n}",
                   "app_secret": app_secret or f"app-secret-{n}"}
        phone_number_id = phone_number_id or f"1065403522{n:05d}"
    if provider == "cloud":
        fields.setdefault("verified_at", utcnow())
        fields.setdefault("webhook_verified_at", utcnow())
    fields.setdefault("display_name", f"Number {n}")
    fields.setdefault("phone_number", f"+9665000{n:05d}")
    fields.setdefault("state", "connected")
    with organization_context(org.id):
        profile = WhatsAppProfile(provider=provider, phone_number_id=phone_number_id,
                                  verify_token=new_verify_token(),
                                  secrets=encrypt(secrets) if secrets is not None else None,
                                  **fields)
        db.session.add(profile)
        db.session.flush()
    return profile


def make_conversation(profile: WhatsAppProfile, phone: str | None = None,
                      **fields) -> Conversation:
    """A conversation on `profile` with a new contact (unless `phone` is given), listed as
    active now unless `last_message_at` says otherwise."""
    fields.setdefault("last_message_at", utcnow())
    with organization_context(profile.organization_id):
        conversation = Conversation(profile_id=profile.id,
                                    contact_phone=phone or unique_phone(), **fields)
        db.session.add(conversation)
        db.session.flush()
    return conversation


def make_message(conversation: Conversation, direction: str = "in", **fields) -> Message:
    """A text message in `conversation`: received from the contact, or sent by us ("out")."""
    n = next(_sequence)
    fields.setdefault("body", f"Message {n}")
    fields.setdefault("status", "received" if direction == "in" else "sent")
    fields.setdefault("provider_message_id", f"wamid.test{n}")
    fields.setdefault("type", "text")
    with organization_context(conversation.organization_id):
        message = Message(conversation_id=conversation.id, profile_id=conversation.profile_id,
                          direction=direction, **fields)
        db.session.add(message)
        db.session.flush()
    return message


def png(width: int = 1, height: int = 1) -> bytes:
    """A valid PNG image (white), for uploads and stored media."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + b"\xff\xff\xff" * width for _row in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def make_media_message(conversation: Conversation, direction: str = "in",
                       mime_type: str = "image/png", data: bytes | None = None,
                       filename: str = "photo.png", **fields) -> Message:
    """A media message in `conversation` whose file is stored, as a downloaded one is."""
    data = png() if data is None else data
    fields.setdefault("type", media.kind_of(mime_type) or "document")
    fields.setdefault("body", "")
    message = make_message(conversation, direction, content={
        "mime_type": mime_type, "filename": filename, "size": len(data)}, **fields)
    with organization_context(conversation.organization_id):
        message.content = {**message.content, "path": media.store(message, data, mime_type)}
        db.session.flush()
    return message


def profiles_of(org_id: int) -> list[WhatsAppProfile]:
    """The organization's numbers as stored now (read afresh, not from the identity map)."""
    with organization_context(org_id):
        return list(db.session.scalars(select(WhatsAppProfile).order_by(WhatsAppProfile.id)
                                       .execution_options(populate_existing=True)))


def page_text(client, url: str, **kwargs) -> str:
    """The HTML of a page that must answer 200 (its start is shown when it does not)."""
    response = client.get(url, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def close_queue(org: Organization) -> None:
    """Keep `org`'s agents out of the unassigned queue (it is open to them by default)."""
    with organization_context(org.id):
        db.session.add(InboxSettings(agents_take_unassigned=False))
        db.session.flush()


def make_canned_reply(org: Organization, shortcut: str | None = None, language: str = "ar",
                      body: str = "شكرًا {name}") -> CannedReply:
    """A saved reply of `org`."""
    with organization_context(org.id):
        reply = CannedReply(shortcut=shortcut or f"reply-{next(_sequence)}", language=language,
                            body=body)
        db.session.add(reply)
        db.session.flush()
    return reply
