"""The WhatsApp module's JSON API: numbers, conversations and messages. Thin: every write is a
service (crm/whatsapp/services.py), which also decides what an agent may see (404 otherwise);
bodies and answers are declared in crm/whatsapp/schemas.py."""

from __future__ import annotations

from flask import Response, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from crm.api.conditional import answer_stale_with, if_match, tagged
from crm.api.helpers import decode_cursor, decode_keyset, encode_cursor, encode_keyset
from crm.api.kit import Page, PageQuery, answer, no_content, parse, parse_form, parse_query
from crm.api.openapi import Endpoints
from crm.errors import ValidationError
from crm.foundation.models import User
from crm.foundation.services import current_organization
from crm.permissions import require, sees_only_assigned
from crm.search import normalize_phone
from crm.web import me, upload_body_limit
from crm.whatsapp import media, profiles, schemas, services
from crm.whatsapp.channels.web import current_qr
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile

UPLOAD_BODY_LIMIT = upload_body_limit(media.MAX_UPLOAD_BYTES)

whatsapp = Endpoints("whatsapp", lazy_gettext("WhatsApp"))
answer_stale_with(Conversation, schemas.Conversation)

_SEND = ("Give `conversation_id`, or `profile_id` and `to`. The message is queued and sent by "
         "a job: its `status` moves from `queued` on. Outside the 24-hour window of a cloud "
         "number only a template is accepted (422 naming `text`).")
_MESSAGES = ("Each page lists its messages oldest to newest; `next_cursor` leads to the page "
             "of older messages. Reactions are not listed.")


# -- numbers (profiles) --------------------------------------------------------------------
# Managing numbers is an admin's business (settings: write), and the module must be switched
# on (the inner guard answers 404 when it is off).

@whatsapp.get("/whatsapp/profiles", "The organization's WhatsApp numbers (one page)",
              answers={200: Page[schemas.WhatsAppProfile]})
@require("whatsapp", "read")
def list_whatsapp_profiles() -> Response:
    return answer(Page[schemas.WhatsAppProfile],
                  {"items": profiles.list_profiles(), "next_cursor": None})


@whatsapp.post("/whatsapp/profiles", "Connect a WhatsApp number (cloud, sandbox, or web: "
               "pairing starts at once)", body=schemas.NewProfile,
               answers={201: schemas.WhatsAppProfile}, errors=(409,))
@require("settings", "write")
@require("whatsapp", "write")
def create_whatsapp_profile() -> Response:
    body = parse(schemas.NewProfile)
    profile = profiles.create_profile(
        me(), body.provider, body.display_name, phone_number=body.phone_number,
        phone_number_id=body.phone_number_id, business_account_id=body.business_account_id,
        access_token=body.access_token, app_secret=body.app_secret,
        auto_assign=body.auto_assign)
    return answer(schemas.WhatsAppProfile, profile, 201)


@whatsapp.get("/whatsapp/profiles/<int:profile_id>", "One WhatsApp number",
              answers={200: schemas.WhatsAppProfile})
@require("whatsapp", "read")
def show_whatsapp_profile(profile_id: int) -> Response:
    return answer(schemas.WhatsAppProfile, profiles.access_profile(profile_id))


@whatsapp.delete("/whatsapp/profiles/<int:profile_id>", "Remove a number; its conversations "
                 "stay", answers={204: None})
@require("settings", "write")
@require("whatsapp", "write")
def delete_whatsapp_profile(profile_id: int) -> Response:
    profiles.delete_profile(me(), profiles.access_profile(profile_id))
    return no_content()


@whatsapp.post("/whatsapp/profiles/<int:profile_id>/disconnect", "Disconnect a number (a "
               "linked device must be paired again)", answers={200: schemas.WhatsAppProfile})
@require("settings", "write")
@require("whatsapp", "write")
def disconnect_whatsapp_profile(profile_id: int) -> Response:
    profile = profiles.disconnect_profile(me(), profiles.access_profile(profile_id))
    return answer(schemas.WhatsAppProfile, profile)


# A verb route, kept as the seed shipped it (docs/api.md).
@whatsapp.post("/whatsapp/connect", "Connect a number; a linked device (web) starts pairing, a "
               "cloud number is checked with the Graph API again", body=schemas.Connection,
               answers={200: schemas.Connected}, errors=(404,))
@require("settings", "write")
@require("whatsapp", "write")
def connect_whatsapp_profile() -> Response:
    profile = profiles.access_profile(parse(schemas.Connection).profile_id)
    profiles.connect_profile(me(), profile)
    # The supervisor publishes the QR code once it has started pairing (after this commit),
    # and again each time WhatsApp rotates it; the page also hears it as `qrCode`.
    qr = current_qr(profile.id) if profile.provider == "web" else None
    return answer(schemas.Connected, {"state": profile.state, "qr": qr})


# -- conversations ------------------------------------------------------------------------

@whatsapp.get("/whatsapp/conversations", "Conversations, latest activity first",
              query=schemas.ConversationQuery, answers={200: Page[schemas.Conversation]})
@require("whatsapp", "read")
def list_conversations() -> Response:
    query = parse_query(schemas.ConversationQuery)
    rows, next_key = services.list_conversations(
        me(), scope=query.scope, status=query.status, profile_id=query.profile_id,
        search=query.search.strip(), after=decode_keyset(query.cursor), limit=query.limit)
    return answer(Page[schemas.Conversation],
                  {"items": rows, "next_cursor": encode_keyset(next_key)})


@whatsapp.get("/whatsapp/conversations/<int:conversation_id>", "One conversation",
              answers={200: schemas.Conversation}, etag=True)
@require("whatsapp", "read")
def show_conversation(conversation_id: int) -> Response:
    conversation = services.access_conversation(conversation_id, me())
    return tagged(answer(schemas.Conversation, conversation), conversation)


@whatsapp.get("/whatsapp/conversations/<int:conversation_id>/messages", "A conversation's "
              "messages, newest page first", query=PageQuery,
              answers={200: Page[schemas.Message]}, description=_MESSAGES)
@require("whatsapp", "read")
def list_conversation_messages(conversation_id: int) -> Response:
    conversation = services.access_conversation(conversation_id, me())
    query = parse_query(PageQuery)
    rows, before_id = services.list_messages(conversation, decode_cursor(query.cursor),
                                             query.limit)
    return answer(Page[schemas.Message], {"items": rows, "next_cursor": encode_cursor(before_id)})


@whatsapp.post("/whatsapp/conversations/<int:conversation_id>/assign", "Assign, transfer or "
               "unassign (null) a conversation", body=schemas.Assignment,
               answers={200: schemas.Conversation}, etag=True)
@require("whatsapp", "write")
def assign_conversation(conversation_id: int) -> Response:
    conversation = services.access_conversation(conversation_id, me())
    body = parse(schemas.Assignment)
    services.assign_conversation(conversation, body.assignee_id, me(),
                                 expected_version=if_match())
    return tagged(answer(schemas.Conversation, conversation), conversation)


@whatsapp.post("/whatsapp/conversations/<int:conversation_id>/status", "Set a conversation's "
               "status", body=schemas.StatusChange, answers={200: schemas.Conversation},
               etag=True)
@require("whatsapp", "write")
def set_conversation_status(conversation_id: int) -> Response:
    conversation = services.access_conversation(conversation_id, me())
    body = parse(schemas.StatusChange)
    services.set_status(conversation, body.status, me(), expected_version=if_match())
    return tagged(answer(schemas.Conversation, conversation), conversation)


@whatsapp.post("/whatsapp/conversations/<int:conversation_id>/read", "Mark a conversation "
               "read (sends the read receipt)", answers={200: schemas.Conversation})
@require("whatsapp", "write")
def mark_conversation_read(conversation_id: int) -> Response:
    conversation = services.access_conversation(conversation_id, me())
    services.mark_conversation_read(conversation, me())
    return answer(schemas.Conversation, conversation)


# -- messages -----------------------------------------------------------------------------
# Verb routes, kept as the seed shipped them (docs/api.md).

@whatsapp.post("/whatsapp/send", "Send a text, a template or (multipart/form-data) a file",
               body=schemas.Send, form=schemas.SendFile, answers={201: schemas.Message},
               errors=(404,), description=_SEND)
@require("whatsapp", "write")
def send_whatsapp_message() -> Response:
    user = me()
    if request.mimetype == "multipart/form-data":
        # WhatsApp takes files of up to 16 MB, more than the app's body limit for other
        # requests; the services check each kind's own limit.
        request.max_content_length = UPLOAD_BODY_LIMIT
        upload = parse_form(schemas.SendFile)
        conversation = _send_target(upload, user)
        message = services.send_media(conversation, user, upload.file, upload.caption,
                                      _reply_to(upload, conversation, user))
    else:
        send = parse(schemas.Send)
        conversation = _send_target(send, user)
        reply_to = _reply_to(send, conversation, user)
        if send.template is not None:
            message = _send_template(send, conversation, user, reply_to)
        else:
            message = services.send_text(conversation, user, send.text, reply_to)
    return answer(schemas.Message, message, 201)


@whatsapp.post("/whatsapp/forward", "Forward a message to another conversation",
               body=schemas.Forward, answers={201: schemas.Message}, errors=(404,))
@require("whatsapp", "write")
def forward_whatsapp_message() -> Response:
    body = parse(schemas.Forward)
    message = services.access_message(body.message_id, me())
    target = services.access_conversation(body.conversation_id, me())
    return answer(schemas.Message, services.forward_message(message, target, me()), 201)


@whatsapp.put("/whatsapp/message", "Edit a sent text message (not on cloud numbers: 422)",
              body=schemas.MessageEdit, answers={200: schemas.Message}, errors=(404, 409))
@require("whatsapp", "write")
def edit_whatsapp_message() -> Response:
    body = parse(schemas.MessageEdit)
    message = services.access_message(body.message_id, me())
    return answer(schemas.Message, services.edit_message(message, body.text, me()))


@whatsapp.delete("/whatsapp/message", "Delete a sent message for everyone (not on cloud "
                 "numbers: 422)", body=schemas.MessageChoice, answers={200: schemas.Message},
                 errors=(404, 409))
@require("whatsapp", "write")
def delete_whatsapp_message() -> Response:
    message = services.access_message(parse(schemas.MessageChoice).message_id, me())
    return answer(schemas.Message, services.delete_message(message, me()))


@whatsapp.post("/whatsapp/messages/<int:message_id>/retry", "Send a failed message again",
               answers={200: schemas.Message}, errors=(409,))
@require("whatsapp", "write")
def retry_whatsapp_message(message_id: int) -> Response:
    message = services.access_message(message_id, me())
    return answer(schemas.Message, services.retry_message(message, me()))


def _send_target(send: schemas.Send | schemas.SendFile, user: User) -> Conversation:
    """The conversation a send goes to: named by id, or with a number and a phone to start it."""
    by_phone = send.profile_id is not None or send.to is not None
    if send.conversation_id is not None:
        if by_phone:
            raise ValidationError({"to": _("Give a conversation, or a number and a phone, "
                                           "not both.")})
        return services.access_conversation(send.conversation_id, user)
    if not by_phone:
        raise ValidationError({"conversation_id": _("This field is required.")})
    if send.profile_id is None:
        raise ValidationError({"profile_id": _("This field is required.")})
    profile = profiles.access_profile(send.profile_id)
    phone = normalize_phone(send.to, current_organization().country)
    if phone is None:
        raise ValidationError({"to": _("Enter a valid phone number.")})
    return _conversation_with(profile, phone, user)


def _conversation_with(profile: WhatsAppProfile, phone: str, user: User) -> Conversation:
    """The conversation with `phone` on `profile`; an agent who starts one is assigned it (they
    could not see it otherwise), and one that exists must be visible to the caller."""
    conversation, created = services.conversation_for(profile, phone, None)
    if created and sees_only_assigned():
        services.assign_conversation(conversation, user.id, user)
    return services.access_conversation(conversation.id, user)


def _reply_to(send: schemas.Send | schemas.SendFile, conversation: Conversation, user: User
              ) -> Message | None:
    if send.reply_to_message_id is None:
        return None
    message = services.access_message(send.reply_to_message_id, user)
    if message.conversation_id != conversation.id:
        raise ValidationError({"reply_to_message_id": _("Reply to a message of this "
                                                        "conversation.")})
    return message


def _send_template(send: schemas.Send, conversation: Conversation, user: User,
                   reply_to: Message | None) -> Message:
    fields = {}
    if send.text is not None:
        fields["text"] = _("Send a text or a template, not both.")
    if reply_to is not None:
        fields["reply_to_message_id"] = _("A template cannot be sent as a reply.")
    if fields:
        raise ValidationError(fields)
    template = send.template
    return services.send_template(conversation, user, template.name, template.language,
                                  template.parameters)
