"""Campaigns' hooks. They publish nothing (pages hear them through live.py's Socket.IO
events campaignProgress and campaignCompleted); what they listen to is below. Nothing happens
while the organization has campaigns switched off."""

from __future__ import annotations

import logging

from crm.campaigns import consent, services
from crm.errors import ValidationError
from crm.events import Payload, subscribe
from crm.foundation.services import enabled_modules
from crm.tenancy import get_in_organization
from crm.whatsapp.models import Conversation, Message
from crm.whatsapp.services import queue_outbound

log = logging.getLogger("crm.campaigns")

PUBLISHES: dict[str, Payload] = {}

LISTENS: dict[str, str] = {
    "message.sent": "a campaign message's recipient follows its message, and the counts with "
                    "it (in-process, right after the commit that moved the message)",
    "message.status": "the same for delivered, read, failed and unknown",
    "message.received": "an opt-out or opt-in word changes the person's consent and they are "
                        "told so in their language; a message within three days of a campaign "
                        "message counts as its reply (a job)",
}


@subscribe("message.sent")
def message_sent(payload: dict) -> None:
    services.follow_message(payload["message_id"], "sent")


@subscribe("message.status")
def message_status(payload: dict) -> None:
    services.follow_message(payload["message_id"], payload.get("status"))


@subscribe("message.received", job=True)
def message_received(payload: dict) -> None:
    phone = payload.get("contact_phone")
    if not phone or "campaigns" not in enabled_modules():
        return
    text = payload.get("body") or ""
    action, method = consent.match_keyword(text), "keyword"
    if action is None and payload.get("type") in ("button", "interactive"):
        action, method = consent.match_keyword(_button_payload(payload["message_id"])), "button"
    if action is not None and consent.record(
            action, phone, method=method, customer_id=payload.get("customer_id"),
            message_id=payload["message_id"], text=text) is not None:
        _confirm(payload["conversation_id"], action, text)
    services.note_reply(phone, payload.get("customer_id"), text)


def _button_payload(message_id: int) -> str:
    """What a tapped button says under its label: a template quick reply's payload, an
    interactive reply's id."""
    message = get_in_organization(Message, message_id)
    if message is None:
        return ""
    found = message.content.get("payload") or message.content.get("id")
    return found if isinstance(found, str) else ""


def _confirm(conversation_id: int, action: str, written: str) -> None:
    conversation = get_in_organization(Conversation, conversation_id)
    if conversation is None:
        return
    try:
        queue_outbound(conversation, None, body=consent.confirmation(action, written))
    except ValidationError as exc:  # the 24-hour window closed (an event delivered late)
        log.info("consent confirmation not sent to conversation %s: %s", conversation_id,
                 exc.fields)
