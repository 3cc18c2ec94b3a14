"""Field checks shared by forms, the API and imports, and the organization's custom fields.

Each check takes what a form or JSON body sent and returns the value to store, or raises a
ValidationError keyed by the field's name; `collect` runs several and reports them all.
Custom field errors are keyed `cf_<key>`, as the list filters and forms name them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from sqlalchemy import func, select, update

from crm.customers.models import FIELD_TYPES, Customer, CustomFieldDefinition
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit, current_organization, normalize_email
from crm.search import fold_text, latin_digits, normalize_phone
from crm.tenancy import get_in_organization
from crm.text import has_control_characters
from crm.validation import collect, parse_id

MAX_TAGS = 20
_FIELD_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
_TAG_SEPARATORS = re.compile("[,،\n]")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")


def check_text(raw: object, field_name: str, max_length: int, *, required: bool = False,
               single_line: bool = True) -> str:
    """Text of at most `max_length` characters ("" when absent), stripped."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise ValidationError({field_name: _("Enter text.")})
    if len(raw) > max_length:
        raise ValidationError({field_name: _("Use at most %(n)d characters.", n=max_length)})
    if has_control_characters(raw):
        raise ValidationError({field_name: _("Remove the control characters.")})
    value = " ".join(raw.split()) if single_line else raw.strip()
    if required and not value:
        raise ValidationError({field_name: _("This field is required.")})
    return value


def check_phone(raw: object, field_name: str = "phone", region: str | None = None
                ) -> str | None:
    """A phone number in any written form, as E.164 in the organization's country (or
    `region`, which an import passes once rather than loading it for every row)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > 40:
        raise ValidationError({field_name: _("Enter a valid phone number.")})
    phone = normalize_phone(raw, region or current_organization().country)
    if phone is None:
        raise ValidationError({field_name: _("Enter a valid phone number.")})
    return phone


def check_email(raw: object, field_name: str = "email") -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str) or len(raw) > 254:
        raise ValidationError({field_name: _("Enter a valid email address.")})
    return normalize_email(raw, field_name)


def check_id(raw: object, field_name: str) -> int | None:
    """An id from a form (digits) or JSON (an integer, never a boolean); absent is None."""
    if raw is None or raw == "":
        return None
    value = parse_id(raw)
    if value is None:
        raise ValidationError({field_name: _("This id is not valid.")})
    return value


def check_bool(raw: object, field_name: str) -> bool:
    """A JSON boolean, or a form's checkbox value."""
    if isinstance(raw, bool):
        return raw
    if raw is None:
        return False
    if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise ValidationError({field_name: _("Choose yes or no.")})


def check_int(raw: object, field_name: str, low: int, high: int) -> int:
    if isinstance(raw, str) and re.fullmatch(r"-?\d{1,12}", raw.strip()):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ValidationError({field_name: _("Enter a whole number from %(low)d to %(high)d.",
                                             low=low, high=high)})
    return raw


AMOUNT_LIMIT = Decimal("999999999999.99")  # numeric(14, 2)
# Arabic writes 1٬250٫50; people type 1,250.50 or 1250.5, in either digits.
_AMOUNT_SEPARATORS = str.maketrans({"٫": ".", "٬": None, ",": None, " ": None, "\u00a0": None})


def check_amount(raw: object, field_name: str) -> Decimal:
    """An amount of money, 0 when left empty: at most two decimals, never negative."""
    if raw is None or raw == "":
        return Decimal(0)
    if isinstance(raw, str):
        raw = latin_digits(raw.strip()).translate(_AMOUNT_SEPARATORS)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raw = "-"
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        amount = Decimal(-1)
    if (not amount.is_finite() or not 0 <= amount <= AMOUNT_LIMIT
            or amount != amount.quantize(Decimal("0.01"))):
        raise ValidationError({field_name: _("Enter an amount such as 1250 or 1250.50.")})
    return amount.quantize(Decimal("0.01"))


def check_tags(raw: object, field_name: str = "tags") -> list[str]:
    """Tags as a list, or as text separated by commas (Arabic or Latin) or lines."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = _TAG_SEPARATORS.split(raw)
    if not isinstance(raw, list | tuple) or not all(isinstance(tag, str) for tag in raw):
        raise ValidationError({field_name: _("Enter tags as a list of words.")})
    tags, seen = [], set()
    for tag in raw:
        value = check_text(tag, field_name, 40)
        if value and fold_text(value) not in seen:
            seen.add(fold_text(value))
            tags.append(value)
    if len(tags) > MAX_TAGS:
        raise ValidationError({field_name: _("Use at most %(n)d tags.", n=MAX_TAGS)})
    return tags


def not_found() -> NotFoundError:
    return NotFoundError(_("Not found."))


def organization_timezone() -> ZoneInfo:
    """The organization's time zone (its "today" and its nights)."""
    return ZoneInfo(current_organization().timezone)


def check_datetime(raw: object, field_name: str) -> datetime | None:
    """An ISO 8601 moment; one without a zone (a datetime-local input) is in the
    organization's time zone."""
    if raw is None or raw == "":
        return None
    moment = raw if isinstance(raw, datetime) else None
    if isinstance(raw, str) and len(raw) <= 40:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            moment = None
    if moment is None or not 1900 <= moment.year <= 9998:
        raise ValidationError({field_name: _("Enter a date and time.")})
    return moment if moment.tzinfo else moment.replace(tzinfo=organization_timezone())


def check_owner(raw: object, current: int | None = None) -> int | None:
    """An active member of the team, or the `current` owner kept (a member since removed
    keeps the customers they owned until someone chooses another owner)."""
    owner_id = check_id(raw, "owner_id")
    if owner_id is None:
        return None
    owner = get_in_organization(User, owner_id)
    if owner is None or not (owner.is_active or owner.id == current):
        raise ValidationError({"owner_id": _("Choose a member of the team.")})
    return owner.id


# -- custom fields ---------------------------------------------------------------------------

def list_field_definitions() -> list[CustomFieldDefinition]:
    return list(db.session.scalars(select(CustomFieldDefinition).order_by(
        CustomFieldDefinition.position, CustomFieldDefinition.id)))


def field_definitions_by_key() -> dict[str, CustomFieldDefinition]:
    return {definition.key: definition for definition in list_field_definitions()}


def access_field(field_id: int) -> CustomFieldDefinition:
    definition = get_in_organization(CustomFieldDefinition, field_id)
    if definition is None:
        raise not_found()
    return definition


def _check_choices(raw: object) -> list[str]:
    if isinstance(raw, str):
        raw = _TAG_SEPARATORS.split(raw)
    if not isinstance(raw, list | tuple):
        raise ValidationError({"choices": _("List the choices, one per line.")})
    choices = []
    for choice in raw:
        value = check_text(choice, "choices", 80)
        if value and value not in choices:
            choices.append(value)
    if not 1 <= len(choices) <= 50:
        raise ValidationError({"choices": _("List from 1 to 50 choices.")})
    return choices


def create_field_definition(actor: User, data: Mapping) -> CustomFieldDefinition:
    """Define a custom field: key (letters, digits, _), label, type, choices, required."""
    def key() -> str:
        value = data.get("key")
        if not isinstance(value, str) or not _FIELD_KEY.fullmatch(value):
            raise ValidationError({"key": _("Use lower-case letters, digits and _, starting "
                                            "with a letter.")})
        return value

    def field_type() -> str:
        if data.get("type") not in FIELD_TYPES:
            raise ValidationError({"type": _("Choose one of the listed options.")})
        return data["type"]

    values = collect({
        "key": key, "label": lambda: check_text(data.get("label"), "label", 80, required=True),
        "type": field_type, "is_required": lambda: check_bool(data.get("is_required"),
                                                              "is_required")})
    if values["type"] == "choice":
        values["choices"] = _check_choices(data.get("choices"))
    if db.session.scalar(select(CustomFieldDefinition.id).where(
            CustomFieldDefinition.key == values["key"])):
        raise ConflictError(_("A custom field with this key exists."),
                            {"key": _("Already used.")})
    last = db.session.scalar(select(func.max(CustomFieldDefinition.position)))
    definition = CustomFieldDefinition(**values, position=(last or 0) + 1)
    db.session.add(definition)
    db.session.flush()
    audit("custom_field.created", actor, definition, key=definition.key)
    return definition


def update_field_definition(actor: User, definition: CustomFieldDefinition,
                            data: Mapping) -> CustomFieldDefinition:
    """Change a field's label, choices, required flag or position (key and type stay)."""
    checks = {
        "label": lambda: check_text(data.get("label"), "label", 80, required=True),
        "is_required": lambda: check_bool(data.get("is_required"), "is_required"),
        "position": lambda: check_int(data.get("position"), "position", 0, 10_000),
    }
    if definition.type == "choice":
        checks["choices"] = lambda: _check_choices(data.get("choices"))
    for key, value in collect({k: c for k, c in checks.items() if k in data}).items():
        setattr(definition, key, value)
    audit("custom_field.updated", actor, definition, key=definition.key)
    return definition


def delete_field_definition(actor: User, definition: CustomFieldDefinition) -> None:
    """Delete a custom field and its value on every customer."""
    db.session.execute(update(Customer).where(Customer.custom_fields.has_key(definition.key))
                       .values(custom_fields=Customer.custom_fields - definition.key)
                       .execution_options(synchronize_session=False))
    audit("custom_field.deleted", actor, definition, key=definition.key)
    db.session.delete(definition)
    db.session.flush()
    db.session.expire_all()


def check_custom_fields(raw: object, existing: Mapping) -> dict[str, Any]:
    """The custom field values after applying `raw` ({key: value}; empty removes a value) to
    `existing`, each checked against its definition; required fields must end up filled."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValidationError({"custom_fields": _("Enter the custom fields as key and value.")})
    definitions = field_definitions_by_key()
    values, errors = dict(existing), {}
    for key, value in raw.items():
        definition = definitions.get(key)
        if definition is None:
            errors[f"cf_{str(key)[:40]}"] = _("There is no such custom field.")
            continue
        try:
            if value is None or value == "":
                values.pop(key, None)
            else:
                values[key] = check_custom_value(definition, value, f"cf_{key}")
        except ValidationError as exc:
            errors.update(exc.fields)
    for definition in definitions.values():
        if definition.is_required and definition.key not in values \
                and f"cf_{definition.key}" not in errors:
            errors[f"cf_{definition.key}"] = _("This field is required.")
    if errors:
        raise ValidationError(errors)
    return values


def check_custom_value(definition: CustomFieldDefinition, raw: object, name: str) -> Any:
    if definition.type == "number":
        return _number(raw, name)
    if definition.type == "date":
        return _date(raw, name)
    value = check_text(raw, name, 500, required=True)
    if definition.type == "choice" and value not in definition.choices:
        raise ValidationError({name: _("Choose one of the listed options.")})
    return value


def _date(raw: object, name: str) -> str:
    if isinstance(raw, date):
        return raw.isoformat()
    if isinstance(raw, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            pass
    raise ValidationError({name: _("Enter a date as YYYY-MM-DD.")})


def _number(raw: object, name: str) -> int | float:
    """A number from JSON or typed (Arabic digits and decimal sign, thousands commas)."""
    if isinstance(raw, str) and len(raw) <= 40:
        typed = fold_text(raw).replace("٫", ".").replace(",", "").strip()
        raw = float(typed) if re.fullmatch(r"-?\d+(\.\d+)?", typed) else None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) \
            or abs(raw) > 1e15:
        raise ValidationError({name: _("Enter a number.")})
    return int(raw) if float(raw).is_integer() else float(raw)
