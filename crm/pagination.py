"""Keyset pagination, written once for every list: fetch one row more than the page, and the
one codec of the cursors that name where the next page starts.

A cursor is opaque to its reader (pages and the API alike): the last row's sort key, tagged
with the order it belongs to, as base64url JSON. A cursor of another order, forged, or cut short
is a 422 on `cursor`, never a 500 or a wrong page. Lists ordered by id alone may take the id
itself as their cursor (`?cursor=<id>`), read with crm.validation.parse_id. Pages and the API
name it alike, `cursor` (the API also takes `limit`; a page's size is fixed).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from flask_babel import gettext as _
from sqlalchemy import Select

from crm.errors import ValidationError
from crm.extensions import db
from crm.text import has_control_characters
from crm.validation import BIGINT_MAX

Row = TypeVar("Row")
CursorValue = int | float | str | datetime | None
# What a cursor may hold at one place: a type, or several (NoneType for "may be None").
CursorType = type | tuple[type, ...]
MAX_CURSOR = 1000  # characters: a longer one is no cursor of ours


def keyset_page(query: Select, limit: int, key: Callable[[Row], Any], *,
                as_rows: bool = False
                ) -> tuple[list[Row], Any | None]:
    """The first `limit` rows of `query`, and the next page's key — `key` of the page's last
    row — or None when this is the last page (the one extra row fetched tells).

    Objects (the first entity of each row), or with `as_rows` the rows themselves: a select of
    columns, which costs no ORM object a row.
    """
    result = db.session.execute(query.limit(limit + 1))
    rows = list(result if as_rows else result.scalars())
    page = rows[:limit]
    return page, (key(page[-1]) if len(rows) > limit else None)


def encode_cursor(kind: str, key: Sequence[CursorValue] | None) -> str | None:
    """The cursor of the page after the row whose sort key is `key`, in the order `kind`
    names; None (no next page) for None."""
    if key is None:
        return None
    values = [value.isoformat() if isinstance(value, datetime) else value for value in key]
    raw = json.dumps([kind, *values], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(raw: object, kind: str, types: Sequence[CursorType]) -> tuple | None:
    """The sort key in a cursor made by encode_cursor(kind, ...), each value of its type in
    `types` (int: one a BIGINT holds; float: finite; str: text without control characters;
    datetime: an aware moment); None when no cursor was given."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_CURSOR:
        raise bad_cursor()
    try:
        values = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_cursor() from None
    if not isinstance(values, list) or len(values) != len(types) + 1 or values[0] != kind:
        raise bad_cursor()
    return tuple(_value(value, kinds if isinstance(kinds, tuple) else (kinds,))
                 for value, kinds in zip(values[1:], types, strict=True))


def bad_cursor() -> ValidationError:
    return ValidationError({"cursor": _("This cursor is not valid.")})


def _value(value: object, kinds: tuple[type, ...]) -> CursorValue:
    if value is None and type(None) in kinds:
        return None
    if int in kinds and isinstance(value, int) and not isinstance(value, bool) \
            and -BIGINT_MAX <= value <= BIGINT_MAX:
        return value
    if float in kinds and isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value):
        return float(value)
    if str in kinds and isinstance(value, str) and not has_control_characters(value):
        return value
    if datetime in kinds and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise bad_cursor() from None
        if moment.tzinfo is not None:
            return moment
    raise bad_cursor()
