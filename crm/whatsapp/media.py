"""Media files of messages, stored under the instance folder by organization.

Paths carry the organization (`media/<org>/<yyyy-mm>/<message>.<ext>`), and are only ever
served through a view that checks the message belongs to the caller's organization, and only
when they lead inside that organization's folder (`path_of`).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from flask import current_app

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


def root() -> Path:
    return Path(current_app.config["INSTANCE_PATH"]) / "media"


def store(message: Message, data: bytes, mime_type: str) -> str:
    """Write `data` for `message` and return its path relative to the media root."""
    extension = mimetypes.guess_extension(mime_type.split(";")[0].strip()) or ".bin"
    month = message.created_at.strftime("%Y-%m")
    relative = Path(str(message.organization_id)) / month / f"{message.id}{extension}"
    target = root() / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(target.suffix + ".part")
    temporary.write_bytes(data)
    temporary.replace(target)  # never a half-written file under the final name
    return str(relative)


def kind_of(mime_type: str) -> str | None:
    """The WhatsApp message type an upload of `mime_type` is sent as."""
    for kind, (types, _limit) in ALLOWED_UPLOADS.items():
        if mime_type in types:
            return kind
    return None


def path_of(message: Message) -> Path | None:
    """The stored file of `message`, if its path leads inside its organization's folder.

    Resolved first, so `..`, an absolute path or a symbolic link cannot lead out of it: a
    path, however it came to be stored, never reaches another organization's files.
    """
    relative = message.content.get("path")
    if not isinstance(relative, str) or not relative:
        return None
    folder = (root() / str(message.organization_id)).resolve()
    path = (root() / relative).resolve()
    if not path.is_relative_to(folder) or path == folder:
        return None
    return path
