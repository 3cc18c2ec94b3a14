"""Cloud API webhook deliveries: what they say, and keeping them to be applied.

The webhook verifies a delivery's signature, checks its shape with `parse_delivery`, keeps the
raw body for its organization (`accept`; the platform's webhook first routes it by phone number
id, `platform_routes` and `accept_platform`) and answers Meta at once. Deliveries are tenant
rows like any other, behind both walls. The `drain` job (crm/whatsapp/jobs.py) applies what was
kept, in the non-forking worker (`crm worker`), where rendering the live fragments costs Meta's
request nothing.

At most one drain waits in the queue: the webhook enqueues one only when none is waiting (a
Redis key that a drain deletes as it starts, so a delivery kept after that start enqueues the
next drain). Each worker enqueues one as it starts (`request_drain`).

Payload shapes follow Meta's "messages" webhook reference (incoming messages, statuses,
business-scoped user ids).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text

from crm.extensions import db
from crm.jobs import enqueue_now, redis
from crm.keys import key
from crm.tenancy import organization_context
from crm.transaction import on_commit
from crm.validation import parse_id
from crm.whatsapp.channels.base import InboundMessage, StatusUpdate
from crm.whatsapp.channels.cloud import MEDIA_ID
from crm.whatsapp.models import WebhookDelivery

log = logging.getLogger("crm.whatsapp.ingest")

QUEUE = "inbound"  # first in the workers' order: what customers write comes before the rest
MAX_ATTEMPTS = 5  # then a delivery stays, with its last error, for someone to look at
DRAIN_JOB = "crm.whatsapp.jobs:drain"  # jobs.py builds on this module
PENDING_KEY = key("whatsapp", "ingest", "pending")
PENDING_TTL = 60  # seconds; should the enqueue after the key be lost, a later delivery retries
MEDIA = {"image", "video", "audio", "document", "sticker"}
STATUSES = {"sent", "delivered", "read", "failed"}


# -- keeping -----------------------------------------------------------------------------------

def accept(org_id: int, body: bytes, profile_id: int | None) -> None:
    """Keep a verified delivery for the current organization `org_id` (`profile_id`: the
    per-profile webhook it came through) and have it applied once this transaction commits."""
    db.session.execute(insert(WebhookDelivery).values(organization_id=org_id, body=body,
                                                      profile_id=profile_id))
    on_commit(request_drain)


@dataclass(frozen=True)
class Route:
    """Where the platform's webhook sends the changes of one phone number id."""

    organization_id: int
    profile_id: int
    webhook_verified: bool


def platform_routes(changes: list[Change]) -> dict[str, Route]:
    """The numbers the changes name, by phone number id: only numbers whose token the Graph
    API answered for (an unproven claim on a number receives nothing); unknown ones are left
    out with a log line."""
    routes = {}
    for phone_number_id in dict.fromkeys(change.phone_number_id for change in changes):
        row = db.session.execute(
            text("SELECT organization_id, profile_id, webhook_verified FROM "
                 "wasl_whatsapp_profile_by_phone_number_id(:id)"),
            {"id": phone_number_id}).first()
        if row is None:
            log.warning("WhatsApp changes for phone number id %s dropped: no verified number "
                        "here", phone_number_id)
            continue
        routes[phone_number_id] = Route(*row)
    return routes


def accept_platform(body: bytes, document: dict, routes: dict[str, Route]) -> None:
    """Keep a platform delivery routed by `platform_routes`: each organization gets a row with
    only its own numbers' changes (the body as received when it is all one organization's)."""
    parts = split_delivery(document, lambda phone_number_id: (
        routes[phone_number_id].organization_id if phone_number_id in routes else None))
    whole = len(parts) == 1 and all(_phone_number_id(change) in routes
                                    for change in _message_changes(document))
    for org_id, part in parts.items():
        with organization_context(org_id):
            accept(org_id, body if whole else json.dumps(part, ensure_ascii=False).encode(),
                   None)


def split_delivery(document: dict, organization_of: Callable[[str], int | None]
                   ) -> dict[int, dict]:
    """A well-formed delivery (`parse_delivery` accepted it) cut per organization: the same
    envelope with, in each entry, only the messages changes of that organization's numbers;
    the changes of numbers `organization_of` does not know are left out."""
    parts: dict[int, dict] = {}
    for entry in document.get("entry", []):
        changes: dict[int, list[dict]] = defaultdict(list)
        for change in entry.get("changes", []):
            if change.get("field") != "messages":
                continue
            org_id = organization_of(_phone_number_id(change))
            if org_id is not None:
                changes[org_id].append(change)
        for org_id, kept in changes.items():
            parts.setdefault(org_id, {**document, "entry": []})["entry"].append(
                {**entry, "changes": kept})
    return parts


def _message_changes(document: dict) -> list[dict]:
    return [change for entry in document.get("entry", []) for change in entry.get("changes", [])
            if change.get("field") == "messages"]


def _phone_number_id(change: dict) -> str:
    return str(change["value"]["metadata"]["phone_number_id"])


def request_drain() -> None:
    """Enqueue a drain unless one is waiting already."""
    if not redis().set(PENDING_KEY, 1, nx=True, ex=PENDING_TTL):
        return
    try:
        enqueue_now(DRAIN_JOB, queue=QUEUE, org_id=None, description="whatsapp ingest")
    except Exception:
        redis().delete(PENDING_KEY)
        raise




# -- parsing -----------------------------------------------------------------------------------

class MalformedDeliveryError(ValueError):
    """The body is not a webhook delivery in Meta's shape."""


@dataclass
class Change:
    """What one `entry[].changes[].value` of a delivery says about one phone number."""

    phone_number_id: str
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)


def parse_delivery(body: Any) -> list[Change]:
    """Every message and status of a delivery, per phone number id; MalformedDeliveryError if the
    shape is not Meta's. Fields Meta may add later are ignored, never an error."""
    body = _dict(body, "body")
    if body.get("object") != "whatsapp_business_account":
        log.info("webhook for object %r ignored", body.get("object"))
        return []
    changes = []
    for entry in _list(body.get("entry"), "entry"):
        for change in _list(_dict(entry, "entry[]").get("changes"), "entry[].changes"):
            change = _dict(change, "changes[]")
            if change.get("field") != "messages":
                continue  # template reviews, account updates...: not this handler's business
            changes.append(_parse_value(_dict(change.get("value"), "changes[].value")))
    return changes


def _parse_value(value: dict) -> Change:
    metadata = _dict(value.get("metadata"), "value.metadata")
    parsed = Change(_text(metadata, "phone_number_id", "metadata"))
    contacts = [_dict(c, "contacts[]") for c in _list(value.get("contacts", []), "contacts")]
    for message in _list(value.get("messages", []), "messages"):
        parsed.messages.append(_parse_message(_dict(message, "messages[]"), contacts))
    for status in _list(value.get("statuses", []), "statuses"):
        update = _parse_status(_dict(status, "statuses[]"))
        if update is not None:
            parsed.statuses.append(update)
    for error in _list(value.get("errors", []), "errors"):
        log.warning("WhatsApp reported an error for %s: %s", parsed.phone_number_id, error)
    return parsed


def _parse_message(message: dict, contacts: list[dict]) -> InboundMessage:
    phone = _optional_text(message, "from")
    user_id = _optional_text(message, "from_user_id")
    contact = _contact_for(contacts, phone, user_id)
    phone = phone or _optional_text(contact, "wa_id")
    user_id = user_id or _optional_text(contact, "user_id")
    if phone is not None and not phone.isdigit():
        raise MalformedDeliveryError(f"messages[].from is not a phone number: {phone!r}")
    if phone is None and user_id is None:
        raise MalformedDeliveryError("a message names neither a phone number nor a user id")
    kind = _text(message, "type", "messages[]")
    type_, body, content = _parse_content(kind, message)
    context = message.get("context") if isinstance(message.get("context"), dict) else {}
    profile = contact.get("profile") if isinstance(contact.get("profile"), dict) else {}
    return InboundMessage(
        provider_message_id=_text(message, "id", "messages[]"),
        type=type_,
        timestamp=_timestamp(message),
        contact_phone=f"+{phone}" if phone else None,
        contact_user_id=user_id,
        contact_name=str(profile.get("name") or ""),
        body=body,
        content=content,
        reply_to_provider_id=_optional_text(context, "id"),
        is_forwarded=bool(context.get("forwarded") or context.get("frequently_forwarded")),
    )


def _contact_for(contacts: list[dict], phone: str | None, user_id: str | None) -> dict:
    for contact in contacts:
        if (phone and contact.get("wa_id") == phone) or (
                user_id and contact.get("user_id") == user_id):
            return contact
    return contacts[0] if len(contacts) == 1 else {}


# What ingest keeps of each provider object: Meta's documented fields, each of the type Meta
# sends. Content keys that our code writes (path, size, reactions, media_error...) are never
# taken from a provider: a field is copied by name from this list, or not at all.
_TEXT = (str,)
_NUMBER = (int, float)
_FLAG = (bool,)
_MEDIA_FIELDS = {
    "image": {"mime_type": _TEXT, "sha256": _TEXT},
    "video": {"mime_type": _TEXT, "sha256": _TEXT},
    "audio": {"mime_type": _TEXT, "sha256": _TEXT, "voice": _FLAG},
    "document": {"mime_type": _TEXT, "sha256": _TEXT, "filename": _TEXT},
    "sticker": {"mime_type": _TEXT, "sha256": _TEXT, "animated": _FLAG},
}
_LOCATION_FIELDS = {"latitude": _NUMBER, "longitude": _NUMBER, "name": _TEXT, "address": _TEXT,
                   "url": _TEXT}
_CONTACT_CARD_FIELDS = {"addresses": (list,), "birthday": _TEXT, "emails": (list,),
                       "name": (dict,), "org": (dict,), "phones": (list,), "urls": (list,)}
_REPLY_FIELDS = {"id": _TEXT, "title": _TEXT, "description": _TEXT}


def _parse_content(kind: str, message: dict) -> tuple[str, str, dict]:
    """(our type, body, content) of one message; unknown kinds are kept whole as unsupported
    (under `raw`, which nothing reads)."""
    payload = message.get(kind)
    if kind == "text":
        return "text", _text(_dict(payload, "text"), "body", "text"), {}
    if kind in MEDIA:
        media = _dict(payload, kind)
        media_id = _text(media, "id", kind)
        if not MEDIA_ID.fullmatch(media_id):  # it becomes a Graph API path
            raise MalformedDeliveryError(f"{kind}.id is not a media id: {media_id!r}")
        content = {"media_id": media_id, **_known(media, _MEDIA_FIELDS[kind])}
        return kind, _caption(media), content
    if kind == "location":
        location = _known(_dict(payload, "location"), _LOCATION_FIELDS)
        return "location", location.get("name") or location.get("address") or "", location
    if kind == "contacts":
        cards = [_known(_dict(card, "contacts[]"), _CONTACT_CARD_FIELDS)
                 for card in _list(payload, "contacts")]
        names = [_known(card["name"], {"formatted_name": _TEXT}).get("formatted_name")
                 for card in cards if "name" in card]
        return "contacts", ", ".join(name for name in names if name), {"contacts": cards}
    if kind == "reaction":
        reaction = _dict(payload, "reaction")
        emoji = _known(reaction, {"emoji": _TEXT}).get("emoji", "")  # none: a removal
        return "reaction", emoji, {"message_id": _text(reaction, "message_id", "reaction"),
                                   "emoji": emoji}
    if kind == "interactive":
        return _parse_interactive(_dict(payload, "interactive"))
    if kind == "button":
        button = _known(_dict(payload, "button"), {"text": _TEXT, "payload": _TEXT})
        text_ = button.get("text", "")
        return "button", text_, {"text": text_, "payload": button.get("payload")}
    return "unsupported", "", {"original_type": kind, "raw": message}


def _parse_interactive(interactive: dict) -> tuple[str, str, dict]:
    reply_type = _known(interactive, {"type": _TEXT}).get("type")
    reply = interactive.get(reply_type) if reply_type else None
    if reply_type in ("button_reply", "list_reply") and isinstance(reply, dict):
        content = {"reply_type": reply_type, "id": None, "title": "",
                   **_known(reply, _REPLY_FIELDS)}
        return "interactive", content["title"], content
    return "interactive", "", {"reply_type": reply_type, "raw": interactive}


def _known(obj: dict, fields: dict[str, tuple[type, ...]]) -> dict:
    """The `fields` of a provider object that it has, with a value of their type; nothing
    else, so no provider key can name one of our own."""
    return {key: obj[key] for key, types in fields.items() if _is(obj.get(key), types)}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    # JSON's true is no number, though Python's True is an int.
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _caption(media: dict) -> str:
    return media["caption"] if _is(media.get("caption"), _TEXT) else ""


def _parse_status(status: dict) -> StatusUpdate | None:
    name = _text(status, "status", "statuses[]")
    if name not in STATUSES:
        log.info("WhatsApp status %r ignored", name)  # e.g. "played" for voice messages
        return None
    code = message = None
    errors = status.get("errors")
    if name == "failed" and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code, message = _error_of(errors[0])
    return StatusUpdate(
        provider_message_id=_text(status, "id", "statuses[]"),
        status=name,
        timestamp=_timestamp(status),
        our_message_id=_our_id(status.get("biz_opaque_callback_data")),
        error_code=code,
        error_message=message,
    )


def _error_of(error: dict) -> tuple[str | None, str | None]:
    code = str(error["code"]) if error.get("code") is not None else None
    summary = str(error.get("message") or error.get("title") or "")
    error_data = error.get("error_data")
    details = error_data.get("details") if isinstance(error_data, dict) else None
    if details and details != summary:
        summary = f"{summary}: {details}" if summary else str(details)
    return code, summary or None


def _our_id(value: Any) -> int | None:
    """Our message id, echoed back in biz_opaque_callback_data (set by CloudChannel.send)."""
    return parse_id(str(value)) or None


def _timestamp(obj: dict) -> datetime:
    raw = _text(obj, "timestamp", "timestamp")
    try:
        return datetime.fromtimestamp(int(raw), UTC)
    except (ValueError, OverflowError, OSError):
        raise MalformedDeliveryError(f"timestamp is not a Unix time: {raw!r}") from None


def _dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise MalformedDeliveryError(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise MalformedDeliveryError(f"{where} is not a list")
    return value


def _text(obj: dict, key: str, where: str) -> str:
    value = _optional_text(obj, key)
    if value is None:
        raise MalformedDeliveryError(f"{where}.{key} is missing")
    return value


def _optional_text(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedDeliveryError(f"{key} is not a string")
    return str(value)

