"""Media files of messages, stored under the instance folder by organization (crm/storage.py).

Paths carry the organization (`media/<org>/<yyyy-mm>/<message>.<ext>`), and are only ever
served through a view that checks the message belongs to the caller's organization, and only
when they lead inside that organization's folder (`path_of`).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from crm import storage
from crm.storage import root  # noqa: F401 - where media lives, for callers of this module
from crm.whatsapp.models import Message

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
# What WhatsApp accepts per kind (Cloud API limits), and what agents may upload.
ALLOWED_UPLOADS = {
    "image": ({"image/jpeg", "image/png", "image/webp"}, 5 * 1024 * 1024),
    "video": ({"video/mp4", "video/3gpp"}, 16 * 1024 * 1024),
    "audio": ({"audio/aac", "audio/mp4", "audio/mpeg", "audio/amr", "audio/ogg"},
              16 * 1024 * 1024),
    "document": ({"application/pdf", "text/plain", "application/msword",
                  "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                  "application/vnd.ms-excel",
                  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                  "application/vnd.ms-powerpoint",
                  "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
                 16 * 1024 * 1024),
}


def store(message: Message, data: bytes, mime_type: str) -> str:
    """Write `data` for `message` and return its path relative to the media root."""
    month = message.created_at.strftime("%Y-%m")
    return storage.store(message.organization_id, PurePosixPath(month) /
                         f"{message.id}{storage.extension_for(mime_type)}", data)


def kind_of(mime_type: str) -> str | None:
    """The WhatsApp message type an upload of `mime_type` is sent as."""
    for kind, (types, _limit) in ALLOWED_UPLOADS.items():
        if mime_type in types:
            return kind
    return None


def path_of(message: Message) -> Path | None:
    """The stored file of `message`, if its path leads inside its organization's folder."""
    return storage.path_of(message.organization_id, message.content.get("path"))
