"""The WhatsApp API's bodies, queries and answers (crm/api/kit.py): numbers, conversations and
messages. The models check shapes and JSON types; the services check what the values mean and
what an agent may see."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import url_for
from pydantic import ConfigDict, Field, model_validator

from crm.api.kit import Answer, Body, Id, PageQuery, Timestamp, Upload, computed, one_of
from crm.crypto import decrypt_json, masked
from crm.permissions import can
from crm.whatsapp import services
from crm.whatsapp.models import (
    CONVERSATION_STATUSES,
    MEDIA_TYPES,
    MESSAGE_STATUSES,
    MESSAGE_TYPES,
    PROFILE_STATES,
    PROVIDERS,
)
from crm.whatsapp.models import Conversation as ConversationRow
from crm.whatsapp.models import Message as MessageRow
from crm.whatsapp.models import WhatsAppProfile as ProfileRow
from crm.whatsapp.webhooks import webhook_url

MAX_PHONE_LENGTH = 40
MAX_CAPTION_LENGTH = 1024
Phone = Annotated[str, Field(min_length=1, max_length=MAX_PHONE_LENGTH, description=(
    "A phone number in any written form: the conversation with it is started, or continued "
    "if it exists."))]
Text = Annotated[str, Field(min_length=1, max_length=4096)]


def _optional(longest: int, description: str) -> Any:
    """A text that may be left out, null or empty (all three mean "none")."""
    return Annotated[Annotated[str, Field(max_length=longest)] | None,
                     Field(description=description)]


# -- bodies ---------------------------------------------------------------------------------

class NewProfile(Body):
    provider: Literal[PROVIDERS]
    display_name: Annotated[str, Field(min_length=1, max_length=120)]
    phone_number: _optional(MAX_PHONE_LENGTH, "Any written form; stored in E.164.") = None
    phone_number_id: _optional(64, "Cloud: required. Refused (422, with WhatsApp's reason) "
                                   "unless the Graph API answers for this number with "
                                   "`access_token`.") = None
    business_account_id: _optional(64, "Cloud.") = None
    access_token: _optional(512, "Cloud: required; never shown back in full.") = None
    app_secret: _optional(512, "Cloud: required; never shown back in full.") = None
    auto_assign: bool = Field(True, description=(
        "New conversations go to the online agent with the fewest open ones (default on)."))


class Connection(Body):
    profile_id: Id


class Assignment(Body):
    assignee_id: Id | None = Field(description="A user who answers WhatsApp; null unassigns.")


class StatusChange(Body):
    status: Literal[CONVERSATION_STATUSES]


class Template(Body):
    """An approved template; other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(json_schema_extra={"pattern": "^[a-z0-9_]{1,512}$"}, examples=["eid_offer"])
    language: str = Field(json_schema_extra={"pattern": "^[a-z]{2,3}(_[A-Z]{2})?$"},
                          examples=["ar"])
    parameters: list[Annotated[str, Field(max_length=1024)]] = Field(
        [], description="The body's {{1}}, {{2}}... in order.")


class Send(Body):
    """A text or a template, to a conversation or to a phone number on one of the numbers."""

    model_config = ConfigDict(json_schema_extra=one_of(
        (("conversation_id", "text", "reply_to_message_id"), ("conversation_id", "text")),
        (("conversation_id", "template"), ("conversation_id", "template")),
        (("profile_id", "to", "text", "reply_to_message_id"), ("profile_id", "to", "text")),
        (("profile_id", "to", "template"), ("profile_id", "to", "template"))))

    conversation_id: Id = None
    profile_id: Id = Field(None, description="The number to write from.")
    to: Phone = None
    text: Text = None
    reply_to_message_id: Id | None = Field(
        None, description="A message of the same conversation.")
    template: Template = Field(None, description=(
        "The only kind allowed once the 24-hour window of a cloud number has closed."))


class SendFile(Body):
    """A file (multipart/form-data), to a conversation or to a phone number on a number."""

    conversation_id: Id = None
    profile_id: Id = Field(None, description="The number to write from.")
    to: Phone = None
    file: Upload
    caption: Annotated[str, Field(max_length=MAX_CAPTION_LENGTH)] = ""
    reply_to_message_id: Id | None = Field(
        None, description="A message of the same conversation.")


class Forward(Body):
    message_id: Id
    conversation_id: Id


class MessageEdit(Body):
    message_id: Id
    text: Text


class MessageChoice(Body):
    message_id: Id


# -- queries --------------------------------------------------------------------------------

class ConversationQuery(PageQuery):
    scope: Literal[services.FILTERS] = Field("all", description=(
        "mine: assigned to the caller; unassigned; all. Agents always get their own."))
    status: Literal[CONVERSATION_STATUSES] | None = Field(None, description="Only this status.")
    profile_id: Id | None = Field(None, description="Only conversations on this number.")
    search: Annotated[str, Field(max_length=200)] = Field("", description=(
        "Contact names (Arabic letter variants alike), phone numbers in any written form, "
        "and message text."))


# -- answers --------------------------------------------------------------------------------

class WhatsAppProfile(Answer):
    """A number as shown to people: the webhook to paste into Meta's dashboard, and what was
    verified; its verify token and masked secrets to admins only (who manage numbers)."""

    id: int
    display_name: str
    phone_number: str | None
    provider: Literal[PROVIDERS]
    state: Literal[PROFILE_STATES] = Field(description=(
        "A cloud number is `pending` until the Graph API answered for its token "
        "(`verified_at`) and Meta verified its webhook (`webhook_verified_at`); `failed` when "
        "Graph refused it (`last_error` says why)."))
    phone_number_id: str | None
    business_account_id: str | None
    auto_assign: bool = Field(description=(
        "New conversations go to the online agent with the fewest open ones."))
    webhook_url: str | None = computed("Cloud: paste into Meta's dashboard.")
    verify_token: str | None = computed("Cloud: the webhook's verify token (admins only).")
    access_token: str | None = computed("Cloud: masked, last 4 characters (admins only).")
    app_secret: str | None = computed("Cloud: masked, last 4 characters (admins only).")
    verified_at: Timestamp | None = Field(description=(
        "Cloud: when the Graph API last answered for the number with its token; only then is "
        "it routed to."))
    verified_name: str | None = Field(description="Cloud: the number's name, as WhatsApp "
                                                  "knows it.")
    webhook_verified_at: Timestamp | None = Field(
        description="Cloud: when Meta first reached the webhook.")
    last_error: str | None
    created_at: Timestamp

    @model_validator(mode="wrap")
    @classmethod
    def _cloud_fields(cls, profile: ProfileRow, handler: Any) -> WhatsAppProfile:
        shown = handler(profile)
        cloud = profile.provider == "cloud"
        manages = cloud and can("settings", "write")
        secrets = decrypt_json(profile.secrets) if manages else {}
        shown.webhook_url = webhook_url(profile) if cloud else None
        shown.verify_token = profile.verify_token if manages else None
        shown.access_token = masked(secrets.get("access_token")) if manages else None
        shown.app_secret = masked(secrets.get("app_secret")) if manages else None
        return shown


class Connected(Answer):
    state: Literal[PROFILE_STATES]
    qr: str | None = Field(description=(
        "web: the QR code to scan (a PNG data URL) once the supervisor shows one; also pushed "
        "as the `qrCode` event."))


class Conversation(Answer):
    id: int
    profile_id: int
    contact_phone: str | None = Field(description="E.164.")
    contact_user_id: str | None = Field(description=(
        "WhatsApp's business-scoped user id, when the contact has no known phone number."))
    contact_name: str
    status: Literal[CONVERSATION_STATUSES]
    assigned_user_id: int | None
    unread_count: int = Field(ge=0)
    last_message_at: Timestamp | None
    last_message_preview: str
    window_open: bool = computed(
        "False when only a template can be sent (the Cloud API's 24-hour customer service "
        "window has closed).")
    customer_id: int | None
    created_at: Timestamp
    version: int = Field(ge=1, description=(
        "Counts assignments and status changes (new messages leave it alone); the ETag."))
    edited_by_id: int | None = Field(description="Who assigned it or set its status last.")
    edited_at: Timestamp | None = Field(description="When that was.")

    @model_validator(mode="wrap")
    @classmethod
    def _window(cls, conversation: ConversationRow, handler: Any) -> Conversation:
        shown = handler(conversation)
        shown.window_open = services.window_open(conversation)
        return shown


class Media(Answer):
    mime_type: str | None
    filename: str | None
    size: int | None
    url: str | None = Field(description=(
        "Where the file is served (with the same bearer token); null until it is stored."))


class Message(Answer):
    """A message; one deleted for everyone keeps its place but shows no content."""

    id: int
    conversation_id: int
    direction: Literal["in", "out"]
    type: Literal[MESSAGE_TYPES]
    body: str = Field(description="Text or caption; a template's name; empty once deleted.")
    status: Literal[MESSAGE_STATUSES]
    error_code: str | None
    error_message: str | None
    media: Media | None = computed("Media messages only; null once deleted.")
    reply_to_message_id: int | None = Field(validation_alias="reply_to_id")
    is_forwarded: bool
    edited_at: Timestamp | None
    deleted_at: Timestamp | None
    sender_user_id: int | None
    sent_at: Timestamp | None
    delivered_at: Timestamp | None
    read_at: Timestamp | None
    created_at: Timestamp

    @model_validator(mode="wrap")
    @classmethod
    def _content(cls, message: MessageRow, handler: Any) -> Message:
        shown = handler(message)
        if message.deleted_at is not None:
            shown.body = ""
        elif message.type in MEDIA_TYPES:
            shown.media = _media(message)
        return shown


def _media(message: MessageRow) -> Media:
    content = message.content
    # Inbound media are fetched by a job: until the file is stored there is nothing to serve.
    url = (url_for("whatsapp.message_media", message_id=message.id) if content.get("path")
           else None)
    return Media(mime_type=content.get("mime_type"), filename=content.get("filename"),
                 size=content.get("size"), url=url)
