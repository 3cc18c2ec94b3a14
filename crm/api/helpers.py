"""Helpers shared by every module's api.py: strict JSON bodies, cursors, list pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import Any

from flask import request
from flask_babel import gettext as _
from werkzeug.exceptions import BadRequest

from crm.errors import ServiceError, ValidationError


class BadRequestError(ServiceError):
    status = 400
    code = "bad_request"


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    if not request.is_json:
        raise BadRequestError(_("Send a JSON body with Content-Type: application/json."))
    try:
        data = request.get_json(force=False, silent=False, cache=True)
    except BadRequest:  # malformed JSON or UTF-8; a 413 (too large) passes through as it is
        raise BadRequestError(_("The request body is not valid JSON.")) from None
    if not isinstance(data, dict):
        raise BadRequestError(_("The request body must be a JSON object."))
    return data


def encode_cursor(value: int | None) -> str | None:
    if value is None:
        return None
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None = None) -> int | None:
    """Read the `cursor` query parameter (or `raw`); a bad one is a 422 on `cursor`."""
    raw = raw if raw is not None else request.args.get("cursor")
    if not raw:
        return None
    try:
        value = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        number = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationError({"cursor": _("This cursor is not valid.")}) from None
    if number < 0 or number > 2**63 - 1:
        raise ValidationError({"cursor": _("This cursor is not valid.")})
    return number


def page_limit(default: int = 50, maximum: int = 200) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise ValidationError({"limit": _("Use a number from 1 to %(n)d.", n=maximum)})
    return int(raw)


def page(items: Iterable, next_value: int | None, serialize: Callable[[Any], dict]) -> dict:
    return {"items": [serialize(item) for item in items], "next_cursor": encode_cursor(next_value)}
