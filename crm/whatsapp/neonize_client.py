"""The one module that imports neonize: a linked-device client for one profile.

Kept thin on purpose, so tests put a fake in its place that emits the same events
(tests/whatsapp/fake_neonize.py). It hands neonize's own event objects to the supervisor, which
reads them through crm/whatsapp/channels/web.py.

The session: neonize opens its database by name, and any name not starting with "postgres" is a
SQLite file (`file:<name>?_foreign_keys=on`). Each profile gets a file of its own, and a client id
of its own for neonize's in-process registry, so no profile can ever resume another's device.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from neonize.client import NewClient
from neonize.events import (
    ClientOutdatedEv,
    ConnectedEv,
    DisconnectedEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    ReceiptEv,
    StreamReplacedEv,
    TemporaryBanEv,
)
from neonize.proto.Neonize_pb2 import Message as MessageEvent
from neonize.proto.Neonize_pb2 import MessageInfo, MessageSource
from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
from neonize.utils.enum import ReceiptType
from neonize.utils.jid import build_jid

# What the supervisor hears, by neonize event type. "failure" ends the session for good: another
# client took it over, WhatsApp banned the number for a while, or this client is too old.
EVENTS = {PairStatusEv: "pair_status", ConnectedEv: "connected", DisconnectedEv: "disconnected",
          LoggedOutEv: "logged_out", MessageEv: "message", ReceiptEv: "receipt",
          StreamReplacedEv: "failure", TemporaryBanEv: "failure", ClientOutdatedEv: "failure"}


# neonize reads a video's duration and thumbnail, and a voice note's length, with FFmpeg.
NEEDS_FFMPEG = {"video", "audio"}


class MediaToolMissingError(RuntimeError):
    """This server cannot prepare the medium (FFmpeg is not installed)."""

    code = "ffmpeg_missing"


def check_media_tools(kind: str) -> None:
    """Refuse, saying why, a medium neonize could only prepare with FFmpeg when it is absent
    (neonize itself would fail with a bare 'No such file or directory')."""
    if kind in NEEDS_FFMPEG and not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        raise MediaToolMissingError(
            "sending video and voice notes from a linked device needs FFmpeg (ffmpeg and "
            "ffprobe) on the server that runs `crm whatsapp supervise`")


class NeonizeClient:
    """One profile's linked device; `connect()` blocks until `stop()`."""

    def __init__(self, session_path: Path, client_id: str, on_qr: Callable[[str], None],
                 on_event: Callable[[str, Any], None]) -> None:
        self._client = NewClient(str(session_path), uuid=client_id,
                                 props=DeviceProps(os="Wasl", platformType=DeviceProps.DESKTOP))
        self._client.event.qr(lambda _client, code: on_qr(code.decode()))
        for event_type, kind in EVENTS.items():
            self._client.event(event_type)(partial(_forward, on_event, kind))

    def connect(self) -> None:
        self._client.connect()

    def stop(self) -> None:
        self._client.stop()

    def send(self, to: str, kind: str, text: str, media: bytes | None = None,
             mime_type: str = "", filename: str = "", reply: dict | None = None) -> str:
        """Send a text or a medium (optionally quoting `reply`); WhatsApp's message id."""
        check_media_tools(kind)
        quoted = self._quoted(to, reply) if reply else None
        caption = text or None
        if kind == "text":
            message = (self._client.build_reply_message(text, quoted) if quoted
                       else Message(conversation=text))
        elif kind == "image":
            message = self._client.build_image_message(media, caption=caption, quoted=quoted)
        elif kind == "video":
            message = self._client.build_video_message(media, caption=caption, quoted=quoted)
        elif kind == "audio":
            message = self._client.build_audio_message(media, quoted=quoted)
        elif kind == "document":
            message = self._client.build_document_message(
                media, caption=caption, filename=filename or None, mimetype=mime_type or None,
                quoted=quoted)
        else:
            raise ValueError(f"a linked device does not send {kind} messages")
        return self._client.send_message(_jid(to), message).ID

    def edit(self, to: str, message_id: str, text: str) -> None:
        self._client.edit_message(_jid(to), message_id, Message(conversation=text))

    def revoke(self, to: str, message_id: str) -> None:
        self._client.revoke_message(_jid(to), self._client.get_me().JID, message_id)

    def mark_read(self, to: str, message_ids: list[str]) -> None:
        self._client.mark_read(*message_ids, chat=_jid(to), sender=_jid(to),
                               receipt=ReceiptType.READ)

    def download(self, media: bytes) -> bytes:
        """Download and decrypt a medium from its serialized message part."""
        return self._client.download_any(Message.FromString(media))

    def log_out(self) -> None:
        self._client.logout()

    def _quoted(self, to: str, reply: dict) -> MessageEvent:
        """The quoted message as neonize's builders want it (they read id, sender and text)."""
        sender = self._client.get_me().JID if reply["from_me"] else _jid(to)
        source = MessageSource(Chat=_jid(to), Sender=sender, IsFromMe=reply["from_me"])
        return MessageEvent(Info=MessageInfo(ID=reply["id"], MessageSource=source),
                            Message=Message(conversation=reply["text"]))


def _forward(on_event: Callable[[str, Any], None], kind: str, _client: Any, event: Any) -> None:
    on_event(kind, event)


def _jid(address: str) -> Any:
    user, _, server = address.partition("@")
    return build_jid(user, server)
