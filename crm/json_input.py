"""JSON from outside, read with a limit on nesting: the app's request bodies and the webhooks.

Python's parser recurses once per level, so a body of 10,000 nested brackets (a few kilobytes)
raises RecursionError, which nothing expects, and an answer of 500. Every body we read goes
through `loads`, which refuses more than MAX_DEPTH levels with a ValueError like any other
malformed JSON. No body we document nests beyond a handful of levels, nor does Meta's.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request as FlaskRequest
from flask.json.provider import DefaultJSONProvider
from flask_babel import gettext as _

from crm.errors import BadRequestError

MAX_DEPTH = 64


class NestedTooDeeplyError(ValueError):
    """JSON nested more than MAX_DEPTH levels deep."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested too deeply (more than {MAX_DEPTH} levels)")


def loads(data: str | bytes, **kwargs: Any) -> Any:
    """json.loads, refusing more than MAX_DEPTH levels of arrays and objects."""
    try:
        value = json.loads(data, **kwargs)
    except RecursionError:
        raise NestedTooDeeplyError from None
    if _deeper_than(value, MAX_DEPTH):
        raise NestedTooDeeplyError
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Does `value` hold arrays and objects more than `limit` levels deep? (No recursion.)"""
    pending = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending += [(child, depth + 1) for child in children if isinstance(child, dict | list)]
    return False


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading with the depth limit (request.get_json() and flask.json)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s, **kwargs)


class Request(FlaskRequest):
    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        """Say that a body is nested too deeply; other malformed JSON is Flask's plain 400."""
        if isinstance(e, NestedTooDeeplyError):
            raise BadRequestError(_("The JSON body is nested too deeply."))
        return super().on_json_loading_failed(e)
