"""WhatsApp Cloud API webhooks: Meta's subscription check, then signed messages and statuses.

Two doors, one handler. `/webhooks/whatsapp/<profile_id>` serves an organization that connects
its own Meta app (the profile's verify token and app secret); `/webhooks/whatsapp` serves the
platform's own Meta app (WHATSAPP_VERIFY_TOKEN, WHATSAPP_APP_SECRET), to which customers'
numbers are connected, and routes each change by `metadata.phone_number_id`.

The organization comes only from a verified source: the profile the URL names (checked by its
own app secret) or the phone number id inside a delivery signed by the platform. The signature
(X-Hub-Signature-256: "sha256=" + HMAC-SHA256 of the raw body with the app secret) is checked
before the body is parsed, and the whole body is parsed before anything is stored, so a forged
or malformed delivery leaves nothing behind. Payload shapes follow Meta's "messages" webhook
reference (incoming messages, statuses, business-scoped user ids).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text

from crm.crypto import decrypt_json
from crm.extensions import csrf, db
from crm.tenancy import get_in_organization, organization_context, set_current_organization
from crm.transaction import commit
from crm.web import error_body
from crm.whatsapp import services
from crm.whatsapp.channels.base import InboundMessage, StatusUpdate
from crm.whatsapp.models import WhatsAppProfile

log = logging.getLogger("crm.whatsapp.webhooks")
blueprint = Blueprint("whatsapp_webhooks", __name__)
# Meta signs the body; it cannot send a CSRF token (and no session is involved).
csrf.exempt(blueprint)

PATH = "/webhooks/whatsapp"
SIGNATURE_HEADER = "X-Hub-Signature-256"
MEDIA = {"image", "video", "audio", "document", "sticker"}
STATUSES = {"sent", "delivered", "read", "failed"}


def webhook_url(profile: WhatsAppProfile) -> str:
    """The absolute URL to paste into Meta's dashboard for this profile."""
    return f"{current_app.config['SERVER_NAME_FOR_LINKS'].rstrip('/')}{PATH}/{profile.id}"


# -- routes ----------------------------------------------------------------------------------
# Answers go to Meta's servers, not to people, so their wording is not translated.

@blueprint.get(f"{PATH}/<int:profile_id>")
def verify_profile(profile_id: int):
    profile = _cloud_profile(profile_id)
    if profile is None:
        return _refuse(404, "not_found", "No such webhook.")
    return _verify(profile.verify_token)


@blueprint.post(f"{PATH}/<int:profile_id>")
def receive_for_profile(profile_id: int):
    profile = _cloud_profile(profile_id)
    if profile is None:
        return _refuse(404, "not_found", "No such webhook.")
    app_secret = decrypt_json(profile.secrets).get("app_secret") or ""
    if not _signed(app_secret):
        return _refuse(403, "forbidden", "Invalid signature.")
    return _receive(only_organization=profile.organization_id)


@blueprint.get(PATH)
def verify_platform():
    return _verify(current_app.config["WHATSAPP_VERIFY_TOKEN"])


@blueprint.post(PATH)
def receive_for_platform():
    if not _signed(current_app.config["WHATSAPP_APP_SECRET"]):
        return _refuse(403, "forbidden", "Invalid signature.")
    return _receive(only_organization=None)


def _refuse(status: int, code: str, message: str):
    return jsonify(error_body(status, code, message)), status


def _verify(expected_token: str):
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    token = request.args.get("hub.verify_token", "")
    if (request.args.get("hub.mode") != "subscribe" or not expected_token
            or not hmac.compare_digest(token.encode(), expected_token.encode())):
        return _refuse(403, "forbidden", "Verification failed.")
    return Response(request.args.get("hub.challenge", ""), mimetype="text/plain")


def _signed(app_secret: str) -> bool:
    """Is the raw body signed with `app_secret`? (An unset secret verifies nothing.)"""
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not app_secret or not signature.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(app_secret.encode(), request.get_data(cache=True),
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())


def _cloud_profile(profile_id: int) -> WhatsAppProfile | None:
    """The cloud profile the URL names, with its organization made current."""
    org_id = db.session.execute(text("SELECT wasl_whatsapp_profile_organization(:id)"),
                                {"id": profile_id}).scalar()
    if org_id is None:
        return None
    set_current_organization(org_id)
    profile = get_in_organization(WhatsAppProfile, profile_id)
    if profile is None or profile.is_deleted or profile.provider != "cloud":
        return None
    return profile


def _receive(only_organization: int | None):
    try:
        changes = parse_delivery(json.loads(request.get_data(cache=True)))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        log.warning("malformed WhatsApp webhook refused: %s", exc)
        return _refuse(400, "bad_request", f"Malformed delivery: {exc}")
    apply_changes(changes, only_organization)
    return jsonify({"status": "ok"})


# -- applying ----------------------------------------------------------------------------------

def apply_changes(changes: list[Change], only_organization: int | None) -> None:
    """Apply each change to the profile its phone number id names, organization by organization.

    Each organization's changes run in its own context and are committed before the next
    organization's start: pending ORM changes must be flushed under the organization whose
    RLS allows them. `only_organization` confines a per-profile webhook to its organization (a
    delivery signed with one organization's app secret never writes into another's).
    """
    by_organization: dict[int, list[tuple[int, Change]]] = defaultdict(list)
    for change in changes:
        route = _route(change.phone_number_id)
        if route is None or (only_organization is not None and route[0] != only_organization):
            log.warning("WhatsApp change for phone number id %s skipped: no such profile here",
                        change.phone_number_id)
            continue
        by_organization[route[0]].append((route[1], change))
    for org_id, routed in by_organization.items():
        with organization_context(org_id):
            for profile_id, change in routed:
                _apply(get_in_organization(WhatsAppProfile, profile_id), change)
            commit()


def _route(phone_number_id: str) -> tuple[int, int] | None:
    row = db.session.execute(
        text("SELECT organization_id, profile_id FROM "
             "wasl_whatsapp_profile_by_phone_number_id(:id)"), {"id": phone_number_id}).first()
    return (row.organization_id, row.profile_id) if row else None


def _apply(profile: WhatsAppProfile | None, change: Change) -> None:
    if profile is None or profile.provider != "cloud":
        log.warning("WhatsApp change for profile that is not a cloud profile skipped")
        return
    for inbound in change.messages:
        services.receive_inbound(profile, inbound)
    for update in change.statuses:
        services.apply_status(profile, update)


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


def _parse_content(kind: str, message: dict) -> tuple[str, str, dict]:
    """(our type, body, content) of one message; unknown kinds are kept whole as unsupported."""
    payload = message.get(kind)
    if kind == "text":
        return "text", _text(_dict(payload, "text"), "body", "text"), {}
    if kind in MEDIA:
        media = _dict(payload, kind)
        content = {"media_id": _text(media, "id", kind)}
        content.update({key: media[key] for key in ("mime_type", "sha256", "filename",
                                                    "animated", "voice") if key in media})
        return kind, str(media.get("caption") or ""), content
    if kind == "location":
        location = _dict(payload, "location")
        return "location", str(location.get("name") or location.get("address") or ""), location
    if kind == "contacts":
        cards = [_dict(card, "contacts[]") for card in _list(payload, "contacts")]
        names = [str(card["name"].get("formatted_name") or "") for card in cards
                 if isinstance(card.get("name"), dict)]
        return "contacts", ", ".join(name for name in names if name), {"contacts": cards}
    if kind == "reaction":
        reaction = _dict(payload, "reaction")
        emoji = str(reaction.get("emoji") or "")  # Meta omits it when a reaction is removed
        return "reaction", emoji, {"message_id": _text(reaction, "message_id", "reaction"),
                                   "emoji": emoji}
    if kind == "interactive":
        return _parse_interactive(_dict(payload, "interactive"))
    if kind == "button":
        button = _dict(payload, "button")
        text_ = str(button.get("text") or "")
        return "button", text_, {"text": text_, "payload": button.get("payload")}
    return "unsupported", "", {"original_type": kind, "raw": message}


def _parse_interactive(interactive: dict) -> tuple[str, str, dict]:
    reply_type = interactive.get("type")
    reply = interactive.get(reply_type) if isinstance(reply_type, str) else None
    if reply_type in ("button_reply", "list_reply") and isinstance(reply, dict):
        title = str(reply.get("title") or "")
        content = {"reply_type": reply_type, "id": reply.get("id"), "title": title}
        if reply.get("description"):
            content["description"] = reply["description"]
        return "interactive", title, content
    return "interactive", "", {"reply_type": reply_type, "raw": interactive}


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
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if 0 < number < 2**63 else None


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

