"""The built-in simulator: a page where you play the customer (no Meta account needed).

Sends succeed at once and are delivered at once; the customer's page marks them read. Inbound
messages typed on that page go through services.receive_inbound like any channel's.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from crm.jobs import enqueue
from crm.whatsapp.channels.base import ChannelError
from crm.whatsapp.models import Message, WhatsAppProfile

DELIVER_JOB = "crm.whatsapp.jobs:deliver_sandbox"  # the simulated phone received it


class SandboxChannel:
    supports_edit: ClassVar[bool] = True
    supports_revoke: ClassVar[bool] = True

    def __init__(self, profile: WhatsAppProfile) -> None:
        self.profile = profile

    def send(self, message: Message) -> str:
        provider_id = f"sandbox.{uuid.uuid4().hex}"
        enqueue(DELIVER_JOB, message.id, queue="whatsapp")
        return provider_id

    def mark_read(self, message: Message) -> None:
        """The simulated customer sees our read receipts on the sandbox page."""

    def edit(self, message: Message, text: str) -> None:
        """Nothing to tell: the sandbox page shows the stored, edited text."""

    def revoke(self, message: Message) -> None:
        """Nothing to tell: the sandbox page shows the message as deleted."""

    def download_media(self, message: Message) -> tuple[bytes, str]:
        raise ChannelError("sandbox", "sandbox media is stored when it is sent")
