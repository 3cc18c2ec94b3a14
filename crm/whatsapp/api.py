"""The WhatsApp module's JSON API: numbers, conversations and messages. Thin: every write is a
service (crm/whatsapp/services.py), which also decides what an agent may see (404 otherwise)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from crm.api import blueprint as api
from crm.api import openapi
from crm.api.conditional import answer_stale_with, if_match, tagged
from crm.api.helpers import (
    body_id,
    decode_cursor,
    decode_keyset,
    encode_keyset,
    json_body,
    page,
    page_limit,
    query_choice,
    query_id,
    query_text,
)
from crm.api.openapi import (
    CURSOR_PARAMETERS,
    list_of,
    object_schema,
    operation,
    path_id,
    ref,
    versioned,
)
from crm.crypto import decrypt_json, masked
from crm.errors import ValidationError
from crm.foundation.models import User
from crm.permissions import can, require, sees_only_assigned
from crm.search import normalize_phone
from crm.web import upload_body_limit
from crm.whatsapp import media, profiles, services
from crm.whatsapp.channels.web import current_qr
from crm.whatsapp.models import (
    CONVERSATION_STATUSES,
    MEDIA_TYPES,
    MESSAGE_STATUSES,
    MESSAGE_TYPES,
    PROFILE_STATES,
    PROVIDERS,
    Conversation,
    Message,
    WhatsAppProfile,
)
from crm.whatsapp.webhooks import webhook_url

MAX_PHONE_LENGTH = 40
UPLOAD_BODY_LIMIT = upload_body_limit(media.MAX_UPLOAD_BYTES)
MAX_CAPTION_LENGTH = 1024

# -- serialization ------------------------------------------------------------------------


def profile_json(profile: WhatsAppProfile) -> dict:
    """A number as shown to people: the webhook to paste into Meta's dashboard, and what was
    verified; its verify token and masked secrets to admins only (who manage numbers)."""
    cloud = profile.provider == "cloud"
    manages = cloud and can("settings", "write")
    secrets = decrypt_json(profile.secrets) if manages else {}
    return {"id": profile.id, "display_name": profile.display_name,
            "phone_number": profile.phone_number, "provider": profile.provider,
            "state": profile.state, "phone_number_id": profile.phone_number_id,
            "business_account_id": profile.business_account_id,
            "auto_assign": profile.auto_assign,
            "webhook_url": webhook_url(profile) if cloud else None,
            "verify_token": profile.verify_token if manages else None,
            "access_token": masked(secrets.get("access_token")) if manages else None,
            "app_secret": masked(secrets.get("app_secret")) if manages else None,
            "verified_at": iso(profile.verified_at), "verified_name": profile.verified_name,
            "webhook_verified_at": iso(profile.webhook_verified_at),
            "last_error": profile.last_error, "created_at": iso(profile.created_at)}


def conversation_json(conversation: Conversation) -> dict:
    return {"id": conversation.id, "profile_id": conversation.profile_id,
            "contact_phone": conversation.contact_phone,
            "contact_user_id": conversation.contact_user_id,
            "contact_name": conversation.contact_name, "status": conversation.status,
            "assigned_user_id": conversation.assigned_user_id,
            "unread_count": conversation.unread_count,
            "last_message_at": iso(conversation.last_message_at),
            "last_message_preview": conversation.last_message_preview,
            "window_open": services.window_open(conversation),
            "customer_id": conversation.customer_id,
            "created_at": iso(conversation.created_at), "version": conversation.version,
            "edited_by_id": conversation.edited_by_id,
            "edited_at": iso(conversation.edited_at)}


answer_stale_with(Conversation, conversation_json)


def message_json(message: Message) -> dict:
    """A message; one deleted for everyone keeps its place but shows no content."""
    deleted = message.deleted_at is not None
    return {"id": message.id, "conversation_id": message.conversation_id,
            "direction": message.direction, "type": message.type,
            "body": "" if deleted else message.body, "status": message.status,
            "error_code": message.error_code, "error_message": message.error_message,
            "media": None if deleted else _media_json(message),
            "reply_to_message_id": message.reply_to_id, "is_forwarded": message.is_forwarded,
            "edited_at": iso(message.edited_at), "deleted_at": iso(message.deleted_at),
            "sender_user_id": message.sender_user_id, "sent_at": iso(message.sent_at),
            "delivered_at": iso(message.delivered_at), "read_at": iso(message.read_at),
            "created_at": iso(message.created_at)}


def _media_json(message: Message) -> dict | None:
    if message.type not in MEDIA_TYPES:
        return None
    content = message.content
    # Inbound media are fetched by a job: until the file is stored there is nothing to serve.
    url = (url_for("whatsapp.message_media", message_id=message.id) if content.get("path")
           else None)
    return {"mime_type": content.get("mime_type"), "filename": content.get("filename"),
            "size": content.get("size"), "url": url}


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 UTC timestamp ("...Z"), or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _me() -> User:
    return current_user._get_current_object()


# -- numbers (profiles) --------------------------------------------------------------------
# Managing numbers is an admin's business (settings: write), and the module must be switched
# on (the inner guard answers 404 when it is off).

@api.get("/whatsapp/profiles")
@require("whatsapp", "read")
def list_whatsapp_profiles():
    return page(profiles.list_profiles(), None, profile_json)


@api.post("/whatsapp/profiles")
@require("settings", "write")
@require("whatsapp", "write")
def create_whatsapp_profile():
    data = json_body()
    for name, longest in _PROFILE_TEXTS.items():
        _optional_text(data, name, longest)
    if not isinstance(data.get("auto_assign", False), bool):
        raise ValidationError({"auto_assign": _("Choose yes or no.")})
    profile = profiles.create_profile(
        _me(), data.get("provider"), data.get("display_name"),
        phone_number=data.get("phone_number"), phone_number_id=data.get("phone_number_id"),
        business_account_id=data.get("business_account_id"),
        access_token=data.get("access_token"), app_secret=data.get("app_secret"),
        auto_assign=data.get("auto_assign", False))
    return profile_json(profile), 201


@api.get("/whatsapp/profiles/<int:profile_id>")
@require("whatsapp", "read")
def show_whatsapp_profile(profile_id: int):
    return profile_json(profiles.access_profile(profile_id))


@api.delete("/whatsapp/profiles/<int:profile_id>")
@require("settings", "write")
@require("whatsapp", "write")
def delete_whatsapp_profile(profile_id: int):
    profiles.delete_profile(_me(), profiles.access_profile(profile_id))
    return "", 204


@api.post("/whatsapp/profiles/<int:profile_id>/disconnect")
@require("settings", "write")
@require("whatsapp", "write")
def disconnect_whatsapp_profile(profile_id: int):
    return profile_json(profiles.disconnect_profile(_me(), profiles.access_profile(profile_id)))


@api.post("/whatsapp/connect")
@require("settings", "write")
@require("whatsapp", "write")
def connect_whatsapp_profile():
    profile = profiles.access_profile(body_id(json_body(), "profile_id"))
    profiles.connect_profile(_me(), profile)
    # The supervisor publishes the QR code once it has started pairing (after this commit),
    # and again each time WhatsApp rotates it; the page also hears it as `qrCode`.
    qr = current_qr(profile.id) if profile.provider == "web" else None
    return {"state": profile.state, "qr": qr}


# -- conversations ------------------------------------------------------------------------

@api.get("/whatsapp/conversations")
@require("whatsapp", "read")
def list_conversations():
    rows, next_key = services.list_conversations(
        _me(), scope=query_choice("scope", services.FILTERS) or "all",
        status=query_choice("status", CONVERSATION_STATUSES), profile_id=query_id("profile_id"),
        search=query_text("search"), after=decode_keyset(), limit=page_limit())
    return page(rows, next_key, conversation_json, encode=encode_keyset)


@api.get("/whatsapp/conversations/<int:conversation_id>")
@require("whatsapp", "read")
def show_conversation(conversation_id: int):
    conversation = services.access_conversation(conversation_id, _me())
    return tagged(conversation_json(conversation), conversation)


@api.get("/whatsapp/conversations/<int:conversation_id>/messages")
@require("whatsapp", "read")
def list_conversation_messages(conversation_id: int):
    conversation = services.access_conversation(conversation_id, _me())
    rows, before_id = services.list_messages(conversation, decode_cursor(), page_limit())
    return page(rows, before_id, message_json)


@api.post("/whatsapp/conversations/<int:conversation_id>/assign")
@require("whatsapp", "write")
def assign_conversation(conversation_id: int):
    conversation = services.access_conversation(conversation_id, _me())
    data = json_body()
    if "assignee_id" not in data:
        raise ValidationError({"assignee_id": _("This field is required.")})
    assignee_id = body_id(data, "assignee_id", required=False)
    services.assign_conversation(conversation, assignee_id, _me(), expected_version=if_match())
    return tagged(conversation_json(conversation), conversation)


@api.post("/whatsapp/conversations/<int:conversation_id>/status")
@require("whatsapp", "write")
def set_conversation_status(conversation_id: int):
    conversation = services.access_conversation(conversation_id, _me())
    services.set_status(conversation, json_body().get("status"), _me(),
                        expected_version=if_match())
    return tagged(conversation_json(conversation), conversation)


@api.post("/whatsapp/conversations/<int:conversation_id>/read")
@require("whatsapp", "write")
def mark_conversation_read(conversation_id: int):
    conversation = services.access_conversation(conversation_id, _me())
    services.mark_conversation_read(conversation, _me())
    return conversation_json(conversation)


# -- messages -----------------------------------------------------------------------------

@api.post("/whatsapp/send")
@require("whatsapp", "write")
def send_whatsapp_message():
    upload = request.mimetype == "multipart/form-data"
    if upload:
        # WhatsApp takes files of up to 16 MB, more than the app's body limit for other
        # requests; the services check each kind's own limit.
        request.max_content_length = UPLOAD_BODY_LIMIT
    data = _form_fields() if upload else json_body()
    me = _me()
    conversation = _send_target(data, me)
    reply_to = _reply_to(data, conversation, me)
    if upload:
        caption = _optional_text(data, "caption", MAX_CAPTION_LENGTH) or ""
        message = services.send_media(conversation, me, request.files.get("file"), caption,
                                      reply_to)
    elif data.get("template") is not None:
        message = _send_template(data, conversation, me, reply_to)
    else:
        message = services.send_text(conversation, me, data.get("text"), reply_to)
    return message_json(message), 201


@api.post("/whatsapp/forward")
@require("whatsapp", "write")
def forward_whatsapp_message():
    data = json_body()
    message = services.access_message(body_id(data, "message_id"), _me())
    target = services.access_conversation(body_id(data, "conversation_id"), _me())
    return message_json(services.forward_message(message, target, _me())), 201


@api.put("/whatsapp/message")
@require("whatsapp", "write")
def edit_whatsapp_message():
    data = json_body()
    message = services.access_message(body_id(data, "message_id"), _me())
    return message_json(services.edit_message(message, data.get("text"), _me()))


@api.delete("/whatsapp/message")
@require("whatsapp", "write")
def delete_whatsapp_message():
    message = services.access_message(body_id(json_body(), "message_id"), _me())
    return message_json(services.delete_message(message, _me()))


@api.post("/whatsapp/messages/<int:message_id>/retry")
@require("whatsapp", "write")
def retry_whatsapp_message(message_id: int):
    message = services.access_message(message_id, _me())
    return message_json(services.retry_message(message, _me()))


def _form_fields() -> dict[str, Any]:
    """A multipart form's fields, ids as integers where they are written as digits."""
    data: dict[str, Any] = request.form.to_dict()
    for name in ("conversation_id", "profile_id", "reply_to_message_id"):
        value = data.get(name)
        if isinstance(value, str) and value.isascii() and value.isdigit():
            data[name] = int(value)
    texts = {**data, **{name: upload.filename or "" for name, upload in request.files.items()}}
    if field := next((name for name, value in texts.items()
                      if isinstance(value, str) and "\x00" in value), None):
        raise ValidationError({field: _("Remove the control characters.")})
    return data


def _send_target(data: dict[str, Any], me: User) -> Conversation:
    """The conversation a send goes to: named by id, or with a number and a phone to start it."""
    by_phone = data.get("profile_id") is not None or data.get("to") is not None
    if data.get("conversation_id") is not None:
        if by_phone:
            raise ValidationError({"to": _("Give a conversation, or a number and a phone, "
                                           "not both.")})
        return services.access_conversation(body_id(data, "conversation_id"), me)
    if not by_phone:
        raise ValidationError({"conversation_id": _("This field is required.")})
    profile = profiles.access_profile(body_id(data, "profile_id"))
    return _conversation_with(profile, _phone(data), me)


def _phone(data: dict[str, Any]) -> str:
    from crm.foundation.services import current_organization

    raw = _optional_text(data, "to", MAX_PHONE_LENGTH)
    phone = normalize_phone(raw, current_organization().country)
    if phone is None:
        raise ValidationError({"to": _("Enter a valid phone number.")})
    return phone


def _conversation_with(profile: WhatsAppProfile, phone: str, me: User) -> Conversation:
    """The conversation with `phone` on `profile`; an agent who starts one is assigned it (they
    could not see it otherwise), and one that exists must be visible to the caller."""
    conversation, created = services.conversation_for(profile, phone, None)
    if created and sees_only_assigned():
        services.assign_conversation(conversation, me.id, me)
    return services.access_conversation(conversation.id, me)


def _reply_to(data: dict[str, Any], conversation: Conversation, me: User) -> Message | None:
    reply_id = body_id(data, "reply_to_message_id", required=False)
    if reply_id is None:
        return None
    message = services.access_message(reply_id, me)
    if message.conversation_id != conversation.id:
        raise ValidationError({"reply_to_message_id": _("Reply to a message of this "
                                                        "conversation.")})
    return message


def _send_template(data: dict[str, Any], conversation: Conversation, me: User,
                   reply_to: Message | None) -> Message:
    template = data["template"]
    fields = {}
    if not isinstance(template, dict):
        fields["template"] = _("Give the template's name, language and parameters.")
    if data.get("text") is not None:
        fields["text"] = _("Send a text or a template, not both.")
    if reply_to is not None:
        fields["reply_to_message_id"] = _("A template cannot be sent as a reply.")
    if fields:
        raise ValidationError(fields)
    return services.send_template(conversation, me, template.get("name"),
                                  template.get("language"), template.get("parameters", []))


def _optional_text(data: dict[str, Any], name: str, longest: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError({name: _("Enter a text.")})
    if len(value) > longest:
        raise ValidationError({name: _("Use at most %(n)d characters.", n=longest)})
    return value


_PROFILE_TEXTS = {"display_name": 120, "phone_number": MAX_PHONE_LENGTH, "phone_number_id": 64,
                  "business_account_id": 64, "access_token": 512, "app_secret": 512}


# -- the document -------------------------------------------------------------------------

_ID = {"type": "integer", "format": "int64", "minimum": 0, "maximum": openapi.BIGINT_MAX}
_OPTIONAL_ID = {**_ID, "nullable": True}
_TIME = {"type": "string", "format": "date-time"}
_OPTIONAL_TIME = {**_TIME, "nullable": True}
_STRING = {"type": "string"}
_OPTIONAL_STRING = {"type": "string", "nullable": True}


def _text(longest: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": longest}


def _optional_text_schema(longest: int, description: str) -> dict:
    """A text that may be left out, null or empty (all three mean "none")."""
    return {"type": "string", "maxLength": longest, "nullable": True,
            "description": description}


SCHEMAS = {
    "WhatsAppProfile": object_schema({
        "id": _ID, "display_name": _STRING, "phone_number": _OPTIONAL_STRING,
        "provider": {"type": "string", "enum": list(PROVIDERS)},
        "phone_number_id": _OPTIONAL_STRING, "business_account_id": _OPTIONAL_STRING,
        "auto_assign": {"type": "boolean",
                        "description": "New conversations go to the online agent with the "
                                       "fewest open ones."},
        "state": {"type": "string", "enum": list(PROFILE_STATES),
                  "description": "A cloud number is `pending` until the Graph API answered "
                                 "for its token (`verified_at`) and Meta verified its webhook "
                                 "(`webhook_verified_at`); `failed` when Graph refused it "
                                 "(`last_error` says why)."},
        "webhook_url": {**_OPTIONAL_STRING, "description": "Cloud: paste into Meta's dashboard."},
        "verify_token": {**_OPTIONAL_STRING,
                         "description": "Cloud: the webhook's verify token (admins only)."},
        "access_token": {**_OPTIONAL_STRING,
                         "description": "Cloud: masked, last 4 characters (admins only)."},
        "app_secret": {**_OPTIONAL_STRING,
                       "description": "Cloud: masked, last 4 characters (admins only)."},
        "verified_at": {**_OPTIONAL_TIME,
                        "description": "Cloud: when the Graph API last answered for the number "
                                       "with its token; only then is it routed to."},
        "verified_name": {**_OPTIONAL_STRING,
                          "description": "Cloud: the number's name, as WhatsApp knows it."},
        "webhook_verified_at": {**_OPTIONAL_TIME,
                                "description": "Cloud: when Meta first reached the webhook."},
        "last_error": _OPTIONAL_STRING, "created_at": _TIME}),
    "Conversation": object_schema({
        "id": _ID, "profile_id": _ID,
        "contact_phone": {**_OPTIONAL_STRING, "description": "E.164."},
        "contact_user_id": {**_OPTIONAL_STRING,
                            "description": "WhatsApp's business-scoped user id, when the "
                                           "contact has no known phone number."},
        "contact_name": _STRING,
        "status": {"type": "string", "enum": list(CONVERSATION_STATUSES)},
        "assigned_user_id": _OPTIONAL_ID, "unread_count": {"type": "integer", "minimum": 0},
        "last_message_at": _OPTIONAL_TIME, "last_message_preview": _STRING,
        "window_open": {"type": "boolean",
                        "description": "False when only a template can be sent (the Cloud "
                                       "API's 24-hour customer service window has closed)."},
        "customer_id": _OPTIONAL_ID, "created_at": _TIME,
        "version": {"type": "integer", "minimum": 1,
                    "description": "Counts assignments and status changes (new messages "
                                   "leave it alone); the ETag."},
        "edited_by_id": {**_OPTIONAL_ID, "description": "Who assigned it or set its status "
                                                        "last."},
        "edited_at": {**_OPTIONAL_TIME, "description": "When that was."}}),
    "Message": object_schema({
        "id": _ID, "conversation_id": _ID,
        "direction": {"type": "string", "enum": ["in", "out"]},
        "type": {"type": "string", "enum": list(MESSAGE_TYPES)},
        "body": {**_STRING, "description": "Text or caption; a template's name; empty once "
                                           "deleted."},
        "status": {"type": "string", "enum": list(MESSAGE_STATUSES)},
        "error_code": _OPTIONAL_STRING, "error_message": _OPTIONAL_STRING,
        "media": {**object_schema({"mime_type": _OPTIONAL_STRING, "filename": _OPTIONAL_STRING,
                                   "size": {"type": "integer", "nullable": True},
                                   "url": {**_OPTIONAL_STRING,
                                           "description": "Where the file is served (with "
                                                          "the same bearer token); null "
                                                          "until it is stored."}}),
                  "nullable": True, "description": "Media messages only; null once deleted."},
        "reply_to_message_id": _OPTIONAL_ID, "is_forwarded": {"type": "boolean"},
        "edited_at": _OPTIONAL_TIME, "deleted_at": _OPTIONAL_TIME,
        "sender_user_id": _OPTIONAL_ID, "sent_at": _OPTIONAL_TIME,
        "delivered_at": _OPTIONAL_TIME, "read_at": _OPTIONAL_TIME, "created_at": _TIME}),
}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_PROFILE_ID = (path_id("profile_id"),)
_CONVERSATION_ID = (path_id("conversation_id"),)
_MESSAGE_ID = (path_id("message_id"),)
_CONVERSATION_FILTERS = (
    _query("scope", {"type": "string", "enum": list(services.FILTERS), "default": "all"},
           "mine: assigned to the caller; unassigned; all. Agents always get their own."),
    _query("status", {"type": "string", "enum": list(CONVERSATION_STATUSES)}, "Only this status."),
    _query("profile_id", _ID, "Only conversations on this number."),
    _query("search", {"type": "string", "maxLength": 200},
           "Contact names (Arabic letter variants alike), phone numbers in any written form, "
           "and message text."),
    *CURSOR_PARAMETERS)
_TEMPLATE = object_schema({
    "name": {"type": "string", "pattern": "^[a-z0-9_]{1,512}$"},
    "language": {"type": "string", "pattern": "^[a-z]{2,3}(_[A-Z]{2})?$"},
    "parameters": {"type": "array", "items": {"type": "string", "maxLength": 1024},
                   "description": "The body's {{1}}, {{2}}... in order."}},
    ("name", "language"))
_IN_CONVERSATION = {"conversation_id": _ID}
_STARTING = {
    "profile_id": {**_ID, "description": "The number to write from."},
    "to": {**_text(MAX_PHONE_LENGTH),
           "description": "A phone number in any written form: the conversation with it is "
                          "started, or continued if it exists."},
}
_TEXT_MESSAGE = {"text": _text(4096),
                 "reply_to_message_id": {**_OPTIONAL_ID,
                                         "description": "A message of the same conversation."}}
_TEMPLATE_MESSAGE = {"template": {**_TEMPLATE,
                                  "description": "The only kind allowed once the 24-hour "
                                                 "window of a cloud number has closed."}}
_SEND_JSON = {"type": "object", "oneOf": [
    object_schema({**_IN_CONVERSATION, **_TEXT_MESSAGE}, ("conversation_id", "text")),
    object_schema({**_IN_CONVERSATION, **_TEMPLATE_MESSAGE}),
    object_schema({**_STARTING, **_TEXT_MESSAGE}, ("profile_id", "to", "text")),
    object_schema({**_STARTING, **_TEMPLATE_MESSAGE}),
]}
_SEND_MULTIPART = object_schema({
    **_IN_CONVERSATION, **_STARTING, "file": {"type": "string", "format": "binary"},
    "caption": {"type": "string", "maxLength": MAX_CAPTION_LENGTH},
    "reply_to_message_id": _TEXT_MESSAGE["reply_to_message_id"]}, ("file",))
_SEND = operation(
    "Send a text, a template or (multipart/form-data) a file", tag="whatsapp", status=201,
    permission=True, response=ref("Message"), errors=(404,), body=_SEND_JSON)
_SEND["requestBody"]["content"]["multipart/form-data"] = {"schema": _SEND_MULTIPART}
_SEND["description"] = ("Give `conversation_id`, or `profile_id` and `to`. The message is "
                        "queued and sent by a job: its `status` moves from `queued` on. Outside "
                        "the 24-hour window of a cloud number only a template is accepted "
                        "(422 naming `text`).")
_MESSAGES = operation(
    "A conversation's messages, newest page first", tag="whatsapp", status=200,
    permission=True, response=list_of("Message"), errors=(422,),
    parameters=(*_CONVERSATION_ID, *CURSOR_PARAMETERS))
_MESSAGES["description"] = ("Each page lists its messages oldest to newest; `next_cursor` "
                            "leads to the page of older messages. Reactions are not listed.")
_MESSAGE_ID_BODY = {"message_id": _ID}

openapi.register({
    "/api/whatsapp/profiles": {
        "get": operation("The organization's WhatsApp numbers (one page)", tag="whatsapp",
                         status=200, permission=True, response=list_of("WhatsAppProfile")),
        "post": operation(
            "Connect a WhatsApp number (cloud, sandbox, or web: pairing starts at once)",
            tag="whatsapp", status=201,
            permission=True, response=ref("WhatsAppProfile"), errors=(409,),
            body=object_schema({
                "provider": {"type": "string", "enum": list(PROVIDERS)},
                "display_name": _text(120),
                "phone_number": _optional_text_schema(
                    MAX_PHONE_LENGTH, "Any written form; stored in E.164."),
                "phone_number_id": _optional_text_schema(
                    64, "Cloud: required. Refused (422, with WhatsApp's reason) unless the "
                        "Graph API answers for this number with `access_token`."),
                "business_account_id": _optional_text_schema(64, "Cloud."),
                "access_token": _optional_text_schema(512, "Cloud: required; never shown "
                                                           "back in full."),
                "app_secret": _optional_text_schema(512, "Cloud: required; never shown "
                                                         "back in full."),
                "auto_assign": {"type": "boolean", "default": False}},
                ("provider", "display_name"))),
    },
    "/api/whatsapp/profiles/{profile_id}": {
        "get": operation("One WhatsApp number", tag="whatsapp", status=200, permission=True,
                         response=ref("WhatsAppProfile"), parameters=_PROFILE_ID),
        "delete": operation("Remove a number; its conversations stay", tag="whatsapp",
                            status=204, permission=True, parameters=_PROFILE_ID),
    },
    "/api/whatsapp/profiles/{profile_id}/disconnect": {"post": operation(
        "Disconnect a number (a linked device must be paired again)", tag="whatsapp",
        status=200, permission=True, response=ref("WhatsAppProfile"), parameters=_PROFILE_ID)},
    "/api/whatsapp/connect": {"post": operation(
        "Connect a number; a linked device (web) starts pairing, a cloud number is checked "
        "with the Graph API again", tag="whatsapp", status=200,
        permission=True, errors=(404,), body=object_schema({"profile_id": _ID}),
        response=object_schema({
            "state": {"type": "string", "enum": list(PROFILE_STATES)},
            "qr": {**_OPTIONAL_STRING,
                   "description": "web: the QR code to scan (a PNG data URL) once the "
                                  "supervisor shows one; also pushed as the `qrCode` event."}}))},
    "/api/whatsapp/conversations": {"get": operation(
        "Conversations, latest activity first", tag="whatsapp", status=200, permission=True,
        response=list_of("Conversation"), parameters=_CONVERSATION_FILTERS, errors=(422,))},
    "/api/whatsapp/conversations/{conversation_id}": {"get": versioned(operation(
        "One conversation", tag="whatsapp", status=200, permission=True,
        response=ref("Conversation"), parameters=_CONVERSATION_ID), "Conversation")},
    "/api/whatsapp/conversations/{conversation_id}/messages": {"get": _MESSAGES},
    "/api/whatsapp/conversations/{conversation_id}/assign": {"post": versioned(operation(
        "Assign, transfer or unassign (null) a conversation", tag="whatsapp", status=200,
        permission=True, response=ref("Conversation"), parameters=_CONVERSATION_ID,
        body=object_schema({"assignee_id": {**_OPTIONAL_ID,
                                            "description": "A user who answers WhatsApp."}})),
        "Conversation", writes=True)},
    "/api/whatsapp/conversations/{conversation_id}/status": {"post": versioned(operation(
        "Set a conversation's status", tag="whatsapp", status=200, permission=True,
        response=ref("Conversation"), parameters=_CONVERSATION_ID,
        body=object_schema({"status": {"type": "string", "enum": list(CONVERSATION_STATUSES)}})),
        "Conversation", writes=True)},
    "/api/whatsapp/conversations/{conversation_id}/read": {"post": operation(
        "Mark a conversation read (sends the read receipt)", tag="whatsapp", status=200,
        permission=True, response=ref("Conversation"), parameters=_CONVERSATION_ID)},
    "/api/whatsapp/send": {"post": _SEND},
    "/api/whatsapp/forward": {"post": operation(
        "Forward a message to another conversation", tag="whatsapp", status=201,
        permission=True, response=ref("Message"), errors=(404,),
        body=object_schema({**_MESSAGE_ID_BODY, "conversation_id": _ID}))},
    "/api/whatsapp/message": {
        "put": operation("Edit a sent text message (not on cloud numbers: 422)",
                         tag="whatsapp", status=200, permission=True, response=ref("Message"),
                         errors=(404, 409),
                         body=object_schema({**_MESSAGE_ID_BODY, "text": _text(4096)})),
        "delete": operation("Delete a sent message for everyone (not on cloud numbers: 422)",
                            tag="whatsapp", status=200, permission=True,
                            response=ref("Message"), errors=(404, 409),
                            body=object_schema(_MESSAGE_ID_BODY)),
    },
    "/api/whatsapp/messages/{message_id}/retry": {"post": operation(
        "Send a failed message again", tag="whatsapp", status=200, permission=True,
        response=ref("Message"), parameters=_MESSAGE_ID, errors=(409,))},
}, SCHEMAS)
