"""Text PostgreSQL can store: checks for what people send, cleaning for what providers send.

A Python str can hold what PostgreSQL refuses: NUL, and lone surrogates (JSON's "\\ud800"
escape decodes to one; no UTF-8 encodes it). What a person typed is refused with a field error;
what a provider sent is kept with each such character replaced by U+FFFD, so that a message is
never lost over one character.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The unstorable, and control characters no one types; tabs and line breaks are fine.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def is_storable(text: str) -> bool:
    """Can PostgreSQL store `text` (no NUL, no lone surrogate)?"""
    return _UNSTORABLE.search(text) is None


def holds_unstorable(value: Any) -> bool:
    """Does any text in a JSON value (keys included) hold what PostgreSQL cannot store?"""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and not is_storable(item):
            return True
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return False


def has_control_characters(text: str) -> bool:
    """Does typed `text` hold a control character (or anything PostgreSQL cannot store)?"""
    return _CONTROL.search(text) is not None


def clean_text(text: str) -> str:
    """`text` with each NUL and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_strings(value: Any) -> Any:
    """A JSON-like value (dicts, lists, tuples) with every text in it cleaned, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_strings(key): clean_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_strings(item) for item in value)
    return value
