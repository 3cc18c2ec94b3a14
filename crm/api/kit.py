"""The API kit: what every module's api.py declares its operations with.

Each request body, query string and answer is a pydantic model, declared once. The model checks
the shape and the JSON types of what comes in, serializes what goes out, and its JSON Schema is
what /api/openapi.json says (crm/api/openapi.py). What values mean (an email's format, a phone
number, a stage of this pipeline) stays in the services, which the pages and the CSV import
share, with their translated messages.

- `Body`: a JSON object with exactly the declared fields, each of its JSON type: a field nobody
  declared is "Unknown field.", "5" is no number and 1 no boolean. `parse(Model)` reads it.
- `Query`: the query string, read as the declared types ("5" is 5); other parameters are
  ignored, as most APIs do. `parse_query(Model)` reads it.
- `Answer`: read from an object's attributes (or a dict's keys); a value the object does not
  hold as an attribute is computed by the model (`computed_field`, or a validator that sets
  it). `answer(Model, value)` serializes it. A list may select `columns_of(Model, Entity)`
  and answer `as_dicts(rows)`: no ORM object a row, and pydantic reads a dict faster.

pydantic's errors are answered in the caller's language: MESSAGES maps each error type to a
catalog string, so no client ever reads "Input should be a valid integer".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from flask import Response, request
from flask_babel import gettext as _
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    WithJsonSchema,
    WrapValidator,
)
from pydantic import ValidationError as PydanticError
from pydantic_core import PydanticCustomError
from sqlalchemy import Row, inspect
from sqlalchemy.orm import InstrumentedAttribute
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest

from crm.errors import BadRequestError, ValidationError
from crm.text import holds_unstorable, is_storable
from crm.validation import BIGINT_MAX

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


# -- models ---------------------------------------------------------------------------------

class Body(BaseModel):
    """A JSON request body: its declared fields only, each of its own JSON type."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query parameters, text read as the declared types; undeclared ones are ignored."""

    model_config = ConfigDict(extra="ignore")


class Answer(BaseModel):
    """What an operation answers, read from an object's attributes or a dict's keys. Every
    field is always answered, so the document says each is required."""

    model_config = ConfigDict(from_attributes=True,
                              json_schema_serialization_defaults_required=True)


Item = TypeVar("Item")


def columns_of(model: type[Answer], entity: type) -> tuple[InstrumentedAttribute, ...]:
    """The columns of the mapped `entity` that `model` answers: a list selects these and
    answers its rows (as dicts), with no ORM object a row. What the model computes, it
    computes from them."""
    mapped = inspect(entity).column_attrs.keys()
    return tuple(getattr(entity, name) for name in model.model_fields if name in mapped)


def as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Rows of `columns_of` as dicts, which a model validates faster than attributes."""
    names = rows[0]._fields if rows else ()
    return [dict(zip(names, row, strict=True)) for row in rows]


class Page(Answer, Generic[Item]):
    """A page of a list: its items and the keyset cursor of the next page."""

    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last.")

    @classmethod
    def model_parametrized_name(cls, params: tuple[type[Any], ...]) -> str:
        return f"{params[0].__name__}Page"


class Inner:
    """Mark a nested body whose errors name its own fields, not the field that holds it (a
    segment's `filters` are the list's query parameters, and are named as those are)."""


INNER = Inner()


# -- types ----------------------------------------------------------------------------------

def _as(error_type: str, message: str, **context: Any) -> WrapValidator:
    """Turn any error of the wrapped type into one error of `error_type` (MESSAGES says it)."""
    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except PydanticError:
            raise PydanticCustomError(error_type, message, context) from None

    return WrapValidator(validate)


Id = Annotated[int, Field(ge=0, le=BIGINT_MAX, json_schema_extra={"format": "int64"}),
               _as("invalid_id", "This id is not valid.")]


def between(low: int, high: int) -> Any:
    """A whole number from `low` to `high`."""
    return Annotated[int, Field(ge=low, le=high),
                     _as("number_range", "Out of range.", low=low, high=high)]


def _rfc3339(value: str) -> str:
    if not _RFC3339.fullmatch(value):
        raise PydanticCustomError("date_time", "Enter a date and time.")
    return value


# A moment sent by a client: RFC 3339 text with an offset, which the services read.
Moment = Annotated[str, AfterValidator(_rfc3339),
                   WithJsonSchema({"type": "string", "format": "date-time"})]


def _in_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.utcoffset() else moment


# A moment answered: ISO 8601 in UTC, "2030-05-01T06:00:00Z".
Timestamp = Annotated[datetime, AfterValidator(_in_utc)]
# A file of a multipart/form-data body.
Upload = Annotated[InstanceOf[FileStorage],
                   WithJsonSchema({"type": "string", "format": "binary"})]


def one_of(*shapes: tuple[tuple[str, ...], tuple[str, ...]]) -> Callable[[dict], None]:
    """Document a body as one of several shapes of its fields, each (fields, required) and
    closed; a `json_schema_extra`. The handler tells the shapes apart and names the field
    that is wrong, as one model's validation cannot."""
    def document(schema: dict) -> None:
        properties = schema.pop("properties")
        for key in ("required", "additionalProperties"):
            schema.pop(key, None)
        schema["oneOf"] = [{"type": "object", "properties": {name: properties[name]
                                                             for name in fields},
                            "required": list(required), "additionalProperties": False}
                           for fields, required in shapes]

    return document


def computed(description: str | None = None) -> Any:
    """A field of an answer that the model's validator sets from the object it reads (no
    attribute of it); never answered empty."""
    return Field(default=None, description=description)


class PageQuery(Query):
    """The query of a list: where the page starts and how long it is."""

    cursor: str | None = Field(None, description="The `next_cursor` of the previous page.")
    limit: between(1, 200) = 50


# -- errors ---------------------------------------------------------------------------------

def _short(ctx: Mapping[str, Any]) -> str:
    if ctx["min_length"] == 1:
        return _("This field is required.")
    return _("Use at least %(n)d characters.", n=ctx["min_length"])


MESSAGES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda ctx: _("This field is required."),
    "extra_forbidden": lambda ctx: _("Unknown field."),
    "string_type": lambda ctx: _("Enter text."),
    "string_unicode": lambda ctx: _("Remove the control characters."),
    "string_too_short": _short,
    "string_too_long": lambda ctx: _("Use at most %(n)d characters.", n=ctx["max_length"]),
    "too_long": lambda ctx: _("Use at most %(n)d items.", n=ctx["max_length"]),
    "bool_type": lambda ctx: _("Choose yes or no."),
    "bool_parsing": lambda ctx: _("Choose yes or no."),
    "int_type": lambda ctx: _("Enter a whole number."),
    "int_parsing": lambda ctx: _("Enter a whole number."),
    "int_from_float": lambda ctx: _("Enter a whole number."),
    "literal_error": lambda ctx: _("Choose one of the listed options."),
    "enum": lambda ctx: _("Choose one of the listed options."),
    "invalid_id": lambda ctx: _("This id is not valid."),
    "number_range": lambda ctx: _("Enter a whole number from %(low)d to %(high)d.",
                                  low=ctx["low"], high=ctx["high"]),
    "date_time": lambda ctx: _("Enter a date and time."),
}


def _said(error: Mapping[str, Any]) -> str:
    """An error of pydantic's in the caller's language (a wrong type of any other kind — a list
    for an object, say — is said plainly)."""
    say = MESSAGES.get(error["type"])
    return say(error.get("ctx") or {}) if say else _("This value has the wrong type.")


def _field_of(model: type[BaseModel], location: tuple[int | str, ...]) -> str:
    """The field an error names: the body's own field, or one inside an INNER body."""
    name = str(location[0]) if location else "body"
    field = model.model_fields.get(name)
    if field is not None and INNER in field.metadata and len(location) > 1 \
            and isinstance(location[1], str):
        return location[1]
    return name


def field_errors(model: type[BaseModel], exc: PydanticError) -> dict[str, str]:
    """pydantic's errors as our `fields`: one translated message per field, the first."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        fields.setdefault(_field_of(model, error["loc"]), _said(error))
    return fields


# -- reading requests -----------------------------------------------------------------------

Model = TypeVar("Model", bound=BaseModel)


def parse(model: type[Model]) -> Model:
    """The request's JSON body as `model`, or a 400 or 422 that says what is wrong with it.

    Read with the app's depth limit (crm/json_input.py). Every mistake is named in one 422:
    unknown fields, wrong types, and text PostgreSQL cannot store (NUL, lone surrogates).
    """
    _check_declared("body", model)
    if not request.is_json:
        raise BadRequestError(_("Send a JSON body with Content-Type: application/json."))
    try:
        data = request.get_json(force=False, silent=False, cache=True)
    except BadRequest:  # malformed JSON or UTF-8; a 413 (too large) passes through as it is
        raise BadRequestError(_("The request body is not valid JSON.")) from None
    if not isinstance(data, dict):
        raise BadRequestError(_("The request body must be a JSON object."))
    return _validated(model, data)


def parse_form(model: type[Model]) -> Model:
    """A multipart/form-data body as `model`: its fields and files, text read as the
    declared types (a form's "12" is 12)."""
    _check_declared("form", model)
    data: dict[str, Any] = {**request.form.to_dict(), **request.files.to_dict()}
    names = {name: upload.filename or "" for name, upload in request.files.items()}
    return _validated(model, data, strict=False, texts=names)


def parse_query(model: type[Model]) -> Model:
    """The query string as `model`: a 422 naming each parameter that is wrong."""
    _check_declared("query", model)
    return _validated(model, request.args.to_dict())


def _validated(model: type[Model], data: dict[str, Any], strict: bool | None = None,
               texts: Mapping[str, str] | None = None) -> Model:
    if not all(isinstance(key, str) and is_storable(key) for key in data):
        # A field name that cannot be sent back in `fields`.
        raise BadRequestError(_("A field name in the request body is not valid text."))
    try:
        parsed, fields = model.model_validate(data, strict=strict), {}
    except PydanticError as exc:
        parsed, fields = None, field_errors(model, exc)
    fields |= {key: _("Remove the control characters.")
               for key, value in {**data, **(texts or {})}.items()
               if key in model.model_fields and holds_unstorable(value)}
    if fields:
        raise ValidationError(fields)
    return parsed


# -- answering ------------------------------------------------------------------------------

def answer(model: type[Answer], value: Any, status: int = 200,
           context: dict[str, Any] | None = None) -> Response:
    """`value` (an object, or a dict) answered as JSON through `model`, with `status`.

    `context` reaches the models' validators. It is one dict for the whole answer, given or
    not, so the items of a page can share in it what they would each compute alike.
    """
    _check_declared(status, model)
    shown = model.model_validate(value, from_attributes=True,
                                 context={} if context is None else context)
    return Response(shown.model_dump_json(), status, mimetype="application/json")


def no_content() -> Response:
    _check_declared(204, None)
    return Response(status=204)


# Each endpoint's declared models ("body", "form", "query", or a status → its answer), filled
# by crm/api/openapi.py. The helpers above refuse a model the endpoint does not declare, so
# the document can never say one thing while the code does another.
DECLARED: dict[str, dict[str | int, type[BaseModel] | None]] = {}
_MISSING = object()


def _check_declared(key: str | int, model: type[BaseModel] | None) -> None:
    declared = DECLARED.get(request.endpoint or "", {}).get(key, _MISSING)
    if declared is not model:
        raise TypeError(f"{request.endpoint} uses {model!r} as its {key!r}, but declares "
                        f"{'nothing' if declared is _MISSING else declared!r}")
