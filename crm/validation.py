"""What every module's checks share: reading an id, and reporting every bad field at once.

A service checks each field of a form or JSON body with a function that returns the value to
store or raises a ValidationError keyed by the field's name (crm/customers/services/fields.py
holds the CRM's); `collect` runs them all, so a form shows every mistake in one answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from crm.errors import ValidationError

T = TypeVar("T")

BIGINT_MAX = 2**63 - 1  # the largest id a BIGINT column holds
_ID_DIGITS = len(str(BIGINT_MAX))


def parse_id(raw: object) -> int | None:
    """The id `raw` names: an int (never a bool) or ASCII digits, from 0 to BIGINT_MAX; None
    for anything else. 0 names no row, as a missing one does, so lookups answer 404 alike."""
    if isinstance(raw, str):
        if not (raw.isascii() and raw.isdigit() and len(raw) <= _ID_DIGITS):
            return None
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= BIGINT_MAX:
        return None
    return raw


def collect(checks: Mapping[str, Callable[[], T]]) -> dict[str, T]:
    """Run each named check; report every failing field together, not just the first."""
    values, errors = {}, {}
    for name, check in checks.items():
        try:
            values[name] = check()
        except ValidationError as exc:
            errors.update(exc.fields)
    if errors:
        raise ValidationError(errors)
    return values
