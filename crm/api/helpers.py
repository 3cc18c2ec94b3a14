"""Helpers shared by every module's api.py: strict JSON bodies, cursors, list pages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from flask import request
from flask_babel import gettext as _
from werkzeug.exceptions import BadRequest

from crm import pagination
from crm.api import openapi
from crm.errors import BadRequestError, ValidationError
from crm.text import holds_unstorable, is_storable
from crm.validation import BIGINT_MAX, parse_id


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 or 422 that says what is wrong with it.

    Read with the app's depth limit (crm/json_input.py). Each field must be one the
    operation's OpenAPI document declares, so a typo is refused rather than ignored, and its
    text one PostgreSQL can store: all such mistakes are named in one 422.
    """
    if not request.is_json:
        raise BadRequestError(_("Send a JSON body with Content-Type: application/json."))
    try:
        data = request.get_json(force=False, silent=False, cache=True)
    except BadRequest:  # malformed JSON or UTF-8; a 413 (too large) passes through as it is
        raise BadRequestError(_("The request body is not valid JSON.")) from None
    if not isinstance(data, dict):
        raise BadRequestError(_("The request body must be a JSON object."))
    if not all(is_storable(key) for key in data):  # a name that cannot be sent back in `fields`
        raise BadRequestError(_("A field name in the request body is not valid text."))
    declared = openapi.body_fields(request.url_rule.rule, request.method)
    fields = {key: _("Unknown field.") for key in data if key not in declared}
    fields |= {key: _("Remove the control characters.")
               for key, value in data.items() if key in declared and holds_unstorable(value)}
    if fields:
        raise ValidationError(fields)
    return data


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


def page_limit(default: int = 50, maximum: int = 200) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise ValidationError({"limit": _("Use a number from 1 to %(n)d.", n=maximum)})
    return int(raw)


def query_text(name: str, max_length: int = 200) -> str:
    """A free-text query parameter, stripped ("" when absent); a 422 on `name` when it is too
    long or holds a NUL, which PostgreSQL cannot compare text with."""
    value = request.args.get(name, "")
    if len(value) > max_length:
        raise ValidationError({name: _("Use at most %(n)d characters.", n=max_length)})
    if "\x00" in value:
        raise ValidationError({name: _("Remove the control characters.")})
    return value.strip()


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """An optional query parameter that must be one of `choices`."""
    value = request.args.get(name)
    if value is not None and value not in choices:
        raise ValidationError({name: _("Choose one of the listed options.")})
    return value


def query_id(name: str) -> int | None:
    """An optional query parameter naming an object by id."""
    value = request.args.get(name)
    if value is None:
        return None
    number = parse_id(value)
    if number is None:
        raise ValidationError({name: _("This id is not valid.")})
    return number


def body_id(data: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    """An id in a request body: an integer (never a boolean); missing or malformed is a 422."""
    value = data.get(name)
    if value is None:
        if required:
            raise ValidationError({name: _("This field is required.")})
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BIGINT_MAX:
        raise ValidationError({name: _("This id is not valid.")})
    return value


def page(items: Iterable, next_value: Any, serialize: Callable[[Any], dict],
         encode: Callable[[Any], str | None] = encode_cursor) -> dict:
    return {"items": [serialize(item) for item in items], "next_cursor": encode(next_value)}
