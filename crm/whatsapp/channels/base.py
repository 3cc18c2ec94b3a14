"""What every channel speaks: inbound messages and status updates in, sends out.

Channels translate between a provider's wire format and these plain values; everything else
(storing, idempotency, the outbox, events) lives in crm/whatsapp/services.py, once. The values
are storable as they are made: a provider's NUL or lone surrogate, which PostgreSQL refuses,
becomes U+FFFD in every text they carry, whichever channel made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import ClassVar, Protocol

from crm.text import clean_strings
from crm.whatsapp.models import Message, WhatsAppProfile


def _clean(value: object) -> None:
    """Replace what PostgreSQL cannot store in every text of a frozen dataclass, in place."""
    for field_ in fields(value):
        object.__setattr__(value, field_.name, clean_strings(getattr(value, field_.name)))


@dataclass(frozen=True)
class InboundMessage:
    """A message a contact sent to one of our numbers."""

    provider_message_id: str
    type: str  # one of models.MESSAGE_TYPES; unknown provider types arrive as "unsupported"
    timestamp: datetime
    contact_phone: str | None = None  # E.164; None when the contact has only a user id
    contact_user_id: str | None = None  # WhatsApp's business-scoped user id
    contact_name: str = ""
    body: str = ""  # text, or a caption
    content: dict = field(default_factory=dict)  # media id/mime/filename, location, reaction...
    reply_to_provider_id: str | None = None
    is_forwarded: bool = False

    def __post_init__(self) -> None:
        _clean(self)


@dataclass(frozen=True)
class StatusUpdate:
    """The provider's word on a message we sent."""

    provider_message_id: str
    status: str  # sent | delivered | read | failed
    timestamp: datetime
    our_message_id: int | None = None  # echoed back (cloud: biz_opaque_callback_data)
    error_code: str | None = None
    error_message: str | None = None

    def __post_init__(self) -> None:
        _clean(self)


class ChannelError(Exception):
    """The provider refused a request; `code` is its error code (e.g. 131047, 130429).

    `transient`: a failure of a moment (the network, the provider's 5xx or rate limit, the
    linked-device supervisor not answering), which may well pass if tried again later; a
    download is (a send never is: a person decides).
    """

    def __init__(self, code: str, message: str, transient: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient


class DeliveryUncertainError(Exception):
    """The request may or may not have reached the provider (timeout, dropped connection).

    The message becomes `unknown` and is settled by a later status update, never resent.
    """


class Channel(Protocol):
    supports_edit: ClassVar[bool]
    supports_revoke: ClassVar[bool]

    def __init__(self, profile: WhatsAppProfile) -> None: ...

    def send(self, message: Message) -> str:
        """Send an outbound message (text, media, template, reply); the provider's id."""

    def mark_read(self, message: Message) -> None:
        """Tell the contact an inbound message was read (blue ticks)."""

    def edit(self, message: Message, text: str) -> None:
        """Change the text of a sent message (web only)."""

    def revoke(self, message: Message) -> None:
        """Delete a sent message for everyone (web only)."""

    def download_media(self, message: Message) -> tuple[bytes, str]:
        """The media of an inbound message and its MIME type."""
