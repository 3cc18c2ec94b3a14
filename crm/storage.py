"""Stored files (WhatsApp media, ticket attachments), under the instance folder by organization.

Every path is `<root>/<organization id>/...`, and is only ever served after `path_of` checked
that it leads inside that organization's folder, so no stored path, however it came to be,
reaches another organization's files.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath

from flask import current_app


def root() -> Path:
    return Path(current_app.config["INSTANCE_PATH"]) / "media"


def extension_for(mime_type: str) -> str:
    """The file name extension of a MIME type (".bin" when none is known)."""
    return mimetypes.guess_extension(mime_type.split(";")[0].strip()) or ".bin"


def store(organization_id: int, relative: PurePosixPath, data: bytes) -> str:
    """Write `data` at `relative` inside the organization's folder; the path to keep
    (relative to the root, the organization first)."""
    kept = PurePosixPath(str(organization_id)) / relative
    target = root() / kept
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(target.suffix + ".part")
    temporary.write_bytes(data)
    temporary.replace(target)  # never a half-written file under the final name
    return str(kept)


def path_of(organization_id: int, relative: object) -> Path | None:
    """The stored file a kept path names, if it leads inside the organization's folder.

    Resolved first, so `..`, an absolute path or a symbolic link cannot lead out of it.
    """
    if not isinstance(relative, str) or not relative:
        return None
    folder = (root() / str(organization_id)).resolve()
    path = (root() / relative).resolve()
    if not path.is_relative_to(folder) or path == folder:
        return None
    return path
