"""The sandbox: play the customer of a `sandbox` number, through the real ingest path."""

from __future__ import annotations

import uuid

from flask_babel import gettext as _
from sqlalchemy import select

from crm.errors import ValidationError, file_too_large
from crm.extensions import db
from crm.foundation.services import current_organization
from crm.models import utcnow
from crm.search import normalize_phone
from crm.whatsapp import media, services
from crm.whatsapp.channels.base import InboundMessage, StatusUpdate
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile


def customer_sends(profile: WhatsAppProfile, phone: object, name: object, text: object,
                   upload=None) -> Message:
    """A message from the simulated customer `phone` to the sandbox number."""
    if profile.provider != "sandbox":
        raise ValidationError({"profile_id": _("Choose a sandbox number.")})
    number = normalize_phone(phone, current_organization().country)
    fields = {}
    if number is None:
        fields["phone"] = _("Enter a valid phone number.")
    body = text.strip() if isinstance(text, str) else ""
    has_file = upload is not None and getattr(upload, "filename", "")
    if not body and not has_file:
        fields["text"] = _("Write a message first.")
    if fields:
        raise ValidationError(fields)
    content, kind = {}, "text"
    if has_file:
        kind, content, data = _image(upload)
    message = services.receive_inbound(profile, InboundMessage(
        provider_message_id=f"sandbox.{uuid.uuid4().hex}", type=kind, timestamp=utcnow(),
        contact_phone=number, contact_name=(name.strip()[:120] if isinstance(name, str) else ""),
        body=body[:4096], content=content))
    if has_file:
        message.content = {**message.content, "path": media.store(message, data,
                                                                  content["mime_type"])}
    return message


def _image(upload) -> tuple[str, dict, bytes]:
    mime_type = (upload.mimetype or "").split(";")[0].strip()
    if media.kind_of(mime_type) != "image":
        raise ValidationError({"file": _("The sandbox customer can send images only.")})
    limit = media.ALLOWED_UPLOADS["image"][1]
    data = upload.read(limit + 1)
    if len(data) > limit or not data:
        raise file_too_large(limit)
    return "image", {"mime_type": mime_type, "filename": upload.filename[:200],
                     "size": len(data)}, data


def customer_reads(conversation: Conversation) -> None:
    """The simulated customer opened the chat: everything we sent is read (blue ticks)."""
    unread = db.session.scalars(select(Message).where(
        Message.conversation_id == conversation.id, Message.direction == "out",
        Message.status.in_(("sent", "delivered")), Message.provider_message_id.is_not(None)))
    for message in unread:
        services.apply_status(conversation.profile, StatusUpdate(
            provider_message_id=message.provider_message_id, status="read",
            timestamp=utcnow(), our_message_id=message.id))
