"""The API's cursors: the page after a given id or (timestamp, id), over crm/pagination.py."""

from __future__ import annotations

from datetime import datetime

from flask import request

from crm import pagination


def encode_cursor(value: int | None) -> str | None:
    """The cursor after id `value`, for lists ordered by id (crm/pagination.py's codec)."""
    return pagination.encode_cursor("id", None if value is None else (value,))


def decode_cursor(raw: str | None = None) -> int | None:
    """Read the `cursor` query parameter (or `raw`); a bad one is a 422 on `cursor`."""
    key = pagination.decode_cursor(_cursor(raw), "id", (int,))
    return None if key is None else key[0]


def encode_keyset(key: tuple[datetime, int] | None) -> str | None:
    """A cursor for lists ordered by (timestamp, id), such as newest conversations first."""
    return pagination.encode_cursor("keyset", key)


def decode_keyset(raw: str | None = None) -> tuple[datetime, int] | None:
    """Read a cursor made by encode_keyset(); a bad one is a 422 on `cursor`."""
    return pagination.decode_cursor(_cursor(raw), "keyset", (datetime, int))


def _cursor(raw: str | None) -> str | None:
    return raw if raw is not None else request.args.get("cursor")
