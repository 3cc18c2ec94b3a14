"""The `web` channel: a linked device (neonize/whatsmeow) held by `crm whatsapp supervise`.

The channel never talks to WhatsApp itself: the session lives in the supervisor process. A send
pushes a command onto the profile's Redis list and waits for the supervisor's answer. When the
wait times out, the command is taken back if no supervisor picked it up (then it certainly did
not leave: a plain failure, retryable); otherwise the message may have left (DeliveryUncertain),
and the supervisor settles it by our message id once WhatsApp answers.

This module also translates neonize's events (MessageEv, ReceiptEv) into InboundMessage and
StatusUpdate. It reads them by field name only, so it does not import neonize.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from flask import current_app
from flask_babel import LazyString, lazy_gettext
from redis import Redis

from crm.jobs import redis
from crm.keys import key
from crm.search import normalize_phone
from crm.whatsapp import media
from crm.whatsapp.channels.base import (
    ChannelError,
    DeliveryUncertainError,
    InboundMessage,
    StatusUpdate,
)
from crm.whatsapp.models import MEDIA_TYPES, Message, WhatsAppProfile

USER_SERVER = "s.whatsapp.net"  # phone-number JIDs
LID_SERVER = "lid"  # WhatsApp's hidden user ids (no phone number known)
DEFAULT_TIMEOUT = 30.0  # seconds; WHATSAPP_WEB_COMMAND_TIMEOUT overrides
# The supervisor's answers that mean "not now": the session is (re)connecting.
TRANSIENT_CODES = {"not_connected"}
REPLY_TTL = 60  # seconds an unread answer stays in Redis
QR_TTL = 60  # seconds a QR code stays shown; WhatsApp rotates them every 20-60 s


def commands_key(profile_id: int) -> str:
    return key("whatsapp", "web", profile_id, "commands")


def lock_key(profile_id: int) -> str:
    return key("whatsapp", "web", profile_id, "lock")


def qr_key(profile_id: int) -> str:
    return key("whatsapp", "web", profile_id, "qr")


# Which supervisors run, each with the time its heartbeat lapses: a page tells "waiting for the
# QR code" from "nothing will ever show one". A sorted set, so one supervisor stopping does not
# hide another that still runs.
SUPERVISORS_KEY = key("whatsapp", "web", "supervisors")


def mark_supervisor_alive(connection: Redis, name: str, ttl: float) -> None:
    """Say that supervisor `name` runs for the next `ttl` seconds (its scans renew it)."""
    now = time.time()
    (connection.pipeline().zadd(SUPERVISORS_KEY, {name: now + ttl})
     .zremrangebyscore(SUPERVISORS_KEY, "-inf", now).expire(SUPERVISORS_KEY, int(ttl) + 1)
     .execute())


def mark_supervisor_gone(connection: Redis, name: str) -> None:
    connection.zrem(SUPERVISORS_KEY, name)


def supervisor_running() -> bool:
    """Does any `crm whatsapp supervise` run now (so pairing and sends can happen)?"""
    return redis().zcount(SUPERVISORS_KEY, time.time(), "+inf") > 0


def current_qr(profile_id: int) -> str | None:
    """The QR code (PNG data URL) the profile's pairing shows right now, if any."""
    value = redis().get(qr_key(profile_id))
    return value.decode() if value else None


class WebChannel:
    supports_edit: ClassVar[bool] = True
    supports_revoke: ClassVar[bool] = True

    def __init__(self, profile: WhatsAppProfile) -> None:
        self.profile = profile

    def send(self, message: Message) -> str:
        if message.type != "text" and message.type not in MEDIA_TYPES:
            raise ChannelError("unsupported", f"a linked device cannot send {message.type}")
        return self._call("send", _send_arguments(message), uncertain=True)["id"]

    def mark_read(self, message: Message) -> None:
        self._call("mark_read", {"to": address_of(message), "ids": [message.provider_message_id]})

    def edit(self, message: Message, text: str) -> None:
        self._call("edit", {"to": address_of(message), "id": message.provider_message_id,
                            "text": text})

    def revoke(self, message: Message) -> None:
        self._call("revoke", {"to": address_of(message), "id": message.provider_message_id})

    def download_media(self, message: Message) -> tuple[bytes, str]:
        encoded = message.content.get("web_media")
        if not encoded:
            raise ChannelError("no_media", "this message carries no downloadable media")
        data = base64.b64decode(self._call("download", {"media": encoded})["data"])
        return data, message.content.get("mime_type") or "application/octet-stream"

    def log_out(self) -> None:
        """Unlink the device from the phone; the supervisor then forgets the session."""
        self._call("logout", {})

    def _call(self, action: str, arguments: dict, uncertain: bool = False) -> Any:
        """Push a command for the supervisor and wait for its answer."""
        timeout = float(current_app.config.get("WHATSAPP_WEB_COMMAND_TIMEOUT", DEFAULT_TIMEOUT))
        reply_key = key("whatsapp", "web", "reply", uuid.uuid4().hex)
        command = json.dumps({"action": action, "arguments": arguments, "reply_to": reply_key,
                              "deadline": time.time() + timeout})
        connection = redis()
        connection.rpush(commands_key(self.profile.id), command)
        answer = connection.blpop([reply_key], timeout=timeout)
        if answer is None:
            if connection.lrem(commands_key(self.profile.id), 1, command):
                raise ChannelError("not_connected", "the WhatsApp session is not running",
                                   transient=True)
            if uncertain:
                raise DeliveryUncertainError(f"no answer from the session within {timeout:g}s")
            raise ChannelError("timeout", f"no answer from the session within {timeout:g}s",
                               transient=True)
        reply = json.loads(answer[1])
        if not reply["ok"]:
            raise ChannelError(reply["code"], reply["message"],
                               transient=reply["code"] in TRANSIENT_CODES)
        return reply["result"]


def address_of(message: Message) -> str:
    """The contact's WhatsApp address (JID) for a message of its conversation."""
    conversation = message.conversation
    if conversation.contact_phone:
        return f"{conversation.contact_phone.lstrip('+')}@{USER_SERVER}"
    return conversation.contact_user_id


def _send_arguments(message: Message) -> dict:
    arguments = {"message_id": message.id, "to": address_of(message), "type": message.type,
                 "text": message.body, "reply": None}
    if message.reply_to is not None and message.reply_to.provider_message_id:
        quoted = message.reply_to
        arguments["reply"] = {"id": quoted.provider_message_id,
                              "from_me": quoted.direction == "out", "text": quoted.body}
    if message.type in MEDIA_TYPES:
        path = media.path_of(message)
        if path is None or not path.is_file():
            raise ChannelError("no_media", "the file to send is missing")
        arguments["media"] = {"path": str(path), "mime_type": message.content.get("mime_type", ""),
                              "filename": message.content.get("filename", "")}
    return arguments


# -- neonize events → our plain values -------------------------------------------------------

MEDIA_FIELDS = {"imageMessage": "image", "videoMessage": "video", "audioMessage": "audio",
                "documentMessage": "document", "stickerMessage": "sticker"}
# Parts of a message that are bookkeeping, not something a person sent.
BOOKKEEPING_FIELDS = {"protocolMessage", "senderKeyDistributionMessage",
                      "fastRatchetKeySenderKeyDistributionMessage", "messageContextInfo",
                      "keepInChatMessage", "pinInChatMessage"}
# neonize's Receipt.ReceiptType values: DELIVERED = 1, READ = 4, PLAYED = 6 (a voice note heard).
RECEIPT_STATUSES = {1: "delivered", 4: "read", 6: "read"}


def inbound_from_event(event: Any) -> InboundMessage | None:
    """The InboundMessage of a neonize MessageEv; None when it is not a contact's message.

    Skipped: messages we sent from the phone itself, groups, status broadcasts and newsletters,
    and bookkeeping (key shares, edits and revokes arrive as protocol messages).
    """
    source = event.Info.MessageSource
    if source.IsFromMe or source.IsGroup or source.Chat.Server not in (USER_SERVER, LID_SERVER):
        return None
    fields = [field.name for field, _value in event.Message.ListFields()
              if field.name not in BOOKKEEPING_FIELDS]
    if not fields:
        return None
    kind, body, content = _content(event.Message, fields[0], event.Info.ID)
    context = _context_info(event.Message, fields[0])
    phone, user_id = _contact(source)
    return InboundMessage(
        provider_message_id=event.Info.ID, type=kind, timestamp=_time(event.Info.Timestamp),
        contact_phone=phone, contact_user_id=user_id, contact_name=event.Info.Pushname,
        body=body, content=content,
        reply_to_provider_id=(context.stanzaID or None) if context else None,
        is_forwarded=bool(context and context.isForwarded))


def statuses_from_receipt(event: Any) -> list[StatusUpdate]:
    """One StatusUpdate per message a neonize ReceiptEv names (delivered or read)."""
    status = RECEIPT_STATUSES.get(event.Type)
    if status is None or event.MessageSource.IsGroup:
        return []
    return [StatusUpdate(provider_message_id=message_id, status=status,
                         timestamp=_time(event.Timestamp))
            for message_id in event.MessageIDs]


def phone_of(jid: Any) -> str:
    """The E.164 number of a phone-number JID (the paired phone's own, a contact's)."""
    number = f"+{jid.User}"
    return normalize_phone(number, None) or number


def _contact(source: Any) -> tuple[str | None, str | None]:
    """The contact's phone (E.164) or, when only a hidden id is known, that id (`…@lid`)."""
    for jid in (source.Sender, source.SenderAlt):
        if jid.Server == USER_SERVER and jid.User:
            return phone_of(jid), None
    return None, f"{source.Sender.User}@{source.Sender.Server}"


def _content(message: Any, field: str, message_id: str) -> tuple[str, str, dict]:
    """The type, body and content of the message's main part."""
    part = getattr(message, field)
    if field == "conversation":
        return "text", part, {}
    if field == "extendedTextMessage":
        return "text", part.text, {}
    if field in MEDIA_FIELDS:
        return MEDIA_FIELDS[field], getattr(part, "caption", ""), _media(message, field, message_id)
    if field in ("locationMessage", "liveLocationMessage"):
        return "location", "", {"latitude": part.degreesLatitude,
                                "longitude": part.degreesLongitude,
                                "name": getattr(part, "name", ""),
                                "address": getattr(part, "address", "")}
    if field == "contactMessage":
        return "contacts", "", {"contacts": [_vcard_contact(part)]}
    if field == "contactsArrayMessage":
        return "contacts", "", {"contacts": [_vcard_contact(item) for item in part.contacts]}
    if field == "reactionMessage":
        return "reaction", "", {"emoji": part.text, "message_id": part.key.ID}
    if field == "buttonsResponseMessage":
        return "button", part.selectedDisplayText, {"id": part.selectedButtonID}
    if field == "templateButtonReplyMessage":
        return "button", part.selectedDisplayText, {"id": part.selectedID}
    if field == "listResponseMessage":
        return "interactive", part.title, {"id": part.singleSelectReply.selectedRowID}
    return "unsupported", "", {"provider_type": field}


def _media(message: Any, field: str, message_id: str) -> dict:
    """What the inbox shows of a media part, and what the supervisor needs to download it.

    `web_media` is the part alone (without its thumbnail), serialized: whatsmeow downloads
    and decrypts a medium from its direct path, hashes and media key.
    """
    part = getattr(message, field)
    content = {"media_id": message_id, "mime_type": part.mimetype,
               "sha256": part.fileSHA256.hex(), "size": part.fileLength}
    if field == "documentMessage":
        content["filename"] = part.fileName
    if field == "audioMessage":
        content["voice"] = part.PTT
    downloadable = type(message)()
    getattr(downloadable, field).CopyFrom(part)
    for thumbnail in ("JPEGThumbnail", "pngThumbnail"):
        if thumbnail in getattr(downloadable, field).DESCRIPTOR.fields_by_name:
            getattr(downloadable, field).ClearField(thumbnail)
    content["web_media"] = base64.b64encode(downloadable.SerializeToString()).decode()
    return content


def _context_info(message: Any, field: str) -> Any:
    part = getattr(message, field)
    if field == "conversation" or "contextInfo" not in part.DESCRIPTOR.fields_by_name:
        return None
    return part.contextInfo if part.HasField("contextInfo") else None


_VCARD_PHONE = re.compile(r"^(?:item\d+\.)?TEL[^:]*:(.+)$", re.MULTILINE | re.IGNORECASE)


def _vcard_contact(part: Any) -> dict:
    phones = [number.strip() for number in _VCARD_PHONE.findall(part.vcard)]
    return {"name": part.displayName, "phones": phones, "vcard": part.vcard}


def _time(value: int) -> datetime:
    """A neonize timestamp: seconds, or milliseconds in message infos of newer builds."""
    if not value:
        return datetime.now(UTC)
    return datetime.fromtimestamp(value / 1000 if value > 10**11 else value, UTC)


# -- a linked device's failures in plain words -----------------------------------------------

# Matched in order against the profile's last_error: our reason codes (supervisor.py) or the
# text whatsmeow gave, lower-cased. The text itself goes to the log, never to the page.
FAILURE_SENTENCES = (
    (("logged_out", "logged out", "device_removed", "device removed"),
     lazy_gettext("This device was unlinked from the phone. Press “Connect” to link it again.")),
    (("stream_replaced", "replaced", "conflict"),
     lazy_gettext("WhatsApp Web or another linked session took this device's place. Press "
                  "“Connect” to link it here again.")),
    (("pairing_timeout", "qr code timed out", "qr timeout", "code expired"),
     lazy_gettext("The QR code expired before it was scanned. Press “Connect” to get a new "
                  "one.")),
    (("temporary_ban", "banned"),
     lazy_gettext("WhatsApp has banned this number. Bulk or automated sending from a linked "
                  "device is the usual cause; the phone shows for how long.")),
    (("client_outdated", "outdated"),
     lazy_gettext("WhatsApp refuses this version of the linked-device library. Update Wasl, "
                  "then link the number again.")),
    (("connect_failed", "connection_lost", "the connection ended", "dial tcp", "failed to dial",
      "couldn't dial", "i/o timeout", "connection refused", "connection reset",
      "no such host", "network is unreachable", "websocket", "handshake", "eof",
      "context deadline exceeded"),
     lazy_gettext("Could not reach WhatsApp's servers. Check this server's internet "
                  "connection; Wasl keeps trying.")),
    (("pair_error", "pair-device", "pair success", "pairing"),
     lazy_gettext("Pairing did not finish. Press “Connect” and scan the new QR code.")),
)
OTHER_FAILURE = lazy_gettext("The connection to WhatsApp failed. Press “Connect” to try again; "
                             "the server's log has the details.")


def failure_sentence(raw: str) -> LazyString:
    """What a linked device's failure (a reason code or whatsmeow's text) means, translated."""
    text = raw.lower()
    for needles, sentence in FAILURE_SENTENCES:
        if any(needle in text for needle in needles):
            return sentence
    return OTHER_FAILURE
