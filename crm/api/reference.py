"""The API reference page, /api/docs: /api/openapi.json laid out for people to read.

It reads the same generated document (crm/api/openapi.py `document()`), never a list of its
own, so it cannot say one thing while the API does another. The page's words are translated;
what the document says (summaries, descriptions, schema names) is shown as it is. Public, as
the document is: an integrator reads it before having a token. Server-rendered, no script, so
it works under the CSP and in both directions; rendered once per language and process, since
the document changes only with a deploy (the page's header, which knows the reader, is not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any

from flask import Blueprint, current_app, render_template
from markupsafe import Markup

from crm.api.openapi import TAG_LABELS, document
from crm.foundation.services import API_KEY_PREFIX
from crm.i18n import current_language
from crm.web import page

blueprint = Blueprint("api_docs", __name__)

# The keys of a schema that bound its value, shown beside its type.
BOUNDS = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern")
# An example's value of a type or format that has no example, default or choice of its own.
FORMATS = {"date-time": "2026-12-02T09:00:00Z", "date": "2026-12-02",
           "email": "name@example.com", "binary": "<file>"}
PLACEHOLDERS = {"integer": 1, "number": 1.5, "boolean": True, "null": None}
# How many named schemas deep an example follows (a schema may name itself).
EXAMPLE_DEPTH = 6


@dataclass(frozen=True)
class Field:
    name: str
    type: dict
    required: bool
    description: str | None
    # Values as JSON text, written as they are (a template's tojson would escape Arabic).
    enum: list[str] | None
    default: str | None
    examples: list[str]
    bounds: dict[str, Any]


@dataclass(frozen=True)
class Shape:
    """An object's fields; a body of several shapes (`one_of`) has one Shape each."""

    fields: list[Field]
    values: dict | None = None  # a map's values' type (additionalProperties)


@dataclass(frozen=True)
class Content:
    media_type: str
    type: dict
    shapes: list[Shape]
    example: str | None  # JSON text


@dataclass(frozen=True)
class Reply:
    status: str
    description: str
    type: dict | None
    error: str | None  # the name of a shared error answer (components/responses)
    example: str | None = None  # JSON text, of a success's body


@dataclass(frozen=True)
class Operation:
    anchor: str
    method: str
    path: str
    summary: str
    description: str | None
    public: bool
    parameters: list[Field]
    body: list[Content]
    replies: list[Reply]


@dataclass
class Group:
    tag: str
    label: str
    operations: list[Operation] = field(default_factory=list)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict) -> dict:
    """A schema's type as a small tree the template renders: a named schema (a link), a list
    of, a map of, one of several, or a JSON type with its format."""
    if "$ref" in schema:
        return {"kind": "ref", "name": _ref_name(schema["$ref"])}
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return {"kind": "union", "options": [type_of(option) for option in schema[key]]}
    if "allOf" in schema:
        return {"kind": "all", "options": [type_of(option) for option in schema["allOf"]]}
    kind = schema.get("type")
    if kind == "array":
        return {"kind": "array", "items": type_of(schema.get("items", {}))}
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) \
            and "properties" not in schema:
        return {"kind": "map", "values": type_of(schema["additionalProperties"])}
    if "const" in schema:
        return {"kind": "const", "value": _json(schema["const"], None)}
    return {"kind": "scalar", "name": kind or "any", "format": schema.get("format")}


def _field(name: str, schema: dict, required: bool, description: str | None = None) -> Field:
    """One field or parameter; an optional field's `anyOf [X, null]` keeps its enum and
    bounds, read from X."""
    plain = [option for option in schema.get("anyOf", []) if option != {"type": "null"}]
    inner = plain[0] if len(plain) == 1 else schema
    return Field(name=name, type=type_of(schema), required=required,
                 description=description or schema.get("description"),
                 enum=[_json(value, None) for value in inner["enum"]] if "enum" in inner
                 else None,
                 default=_json(schema["default"], None) if "default" in schema else None,
                 examples=[_json(value, None) for value in schema.get("examples", [])],
                 bounds={key: inner[key] for key in BOUNDS if key in inner})


def shapes_of(schema: dict) -> list[Shape]:
    """The fields of an object schema (of each of its shapes, for a `oneOf` of objects)."""
    if "oneOf" in schema and all(option.get("type") == "object" for option in schema["oneOf"]):
        return [shape for option in schema["oneOf"] for shape in shapes_of(option)]
    if "properties" not in schema:
        values = schema.get("additionalProperties")
        return [Shape([], type_of(values))] if isinstance(values, dict) else []
    required = set(schema.get("required", ()))
    return [Shape([_field(name, prop, name in required)
                   for name, prop in schema["properties"].items()])]


def example_of(schema: dict, schemas: dict[str, dict], depth: int = 0) -> Any:
    """A value `schema` accepts: its own example, choice, constant or default, else one made
    from its type (an object with every field, a list of one)."""
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if schema.get("default") is not None:
        return schema["default"]
    if "$ref" in schema:
        return example_of(schemas[_ref_name(schema["$ref"])], schemas, depth + 1) \
            if depth < EXAMPLE_DEPTH else {}
    for key in ("anyOf", "oneOf", "allOf"):
        options = [option for option in schema.get(key, []) if option != {"type": "null"}]
        if options:
            return example_of(options[0], schemas, depth)
    kind = schema.get("type")
    if kind == "array":
        return [example_of(schema.get("items", {}), schemas, depth)] \
            * max(1, schema.get("minItems", 1))
    if "properties" in schema:
        return {name: example_of(prop, schemas, depth)
                for name, prop in schema["properties"].items()}
    if kind == "object":
        values = schema.get("additionalProperties")
        key = example_of(schema["propertyNames"], schemas, depth) \
            if "propertyNames" in schema else "key"
        return {key: example_of(values, schemas, depth)} if isinstance(values, dict) else {}
    if kind in ("integer", "number"):
        return max(schema.get("minimum", 1), min(schema.get("maximum", 1), 1)) \
            if kind == "integer" else PLACEHOLDERS[kind]
    if kind == "string":
        return FORMATS.get(schema.get("format"), "…" * max(1, schema.get("minLength", 1)))
    return PLACEHOLDERS.get(kind)


def _json(value: Any, indent: int | None = 2) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)


def _operation(path: str, method: str, described: dict, schemas: dict[str, dict]
               ) -> Operation:
    parameters = [_field(p["name"], p["schema"], p.get("required", False), p.get("description"))
                  for p in described.get("parameters", [])]
    body = [Content(media_type, type_of(content["schema"]),
                    [] if "$ref" in content["schema"] else shapes_of(content["schema"]),
                    _json(example_of(content["schema"], schemas))
                    if media_type == "application/json" else None)
            for media_type, content in described.get("requestBody", {})
            .get("content", {}).items()]
    replies = []
    for status, reply in described["responses"].items():
        if "$ref" in reply:
            replies.append(Reply(status, "", None, _ref_name(reply["$ref"])))
            continue
        schema = reply.get("content", {}).get("application/json", {}).get("schema")
        example = _json(example_of(schema, schemas)) if schema and int(status) < 300 else None
        replies.append(Reply(status, reply["description"],
                             type_of(schema) if schema else None, None, example))
    return Operation(anchor=described["operationId"], method=method.upper(), path=path,
                     summary=described["summary"], description=described.get("description"),
                     public=described.get("security") == [], parameters=parameters, body=body,
                     replies=replies)


def reference(doc: dict) -> dict:
    """What the page shows of `doc`: its operations grouped by tag (in the order the tags
    first appear), the shared error answers, the named schemas and their fields."""
    groups: dict[str, Group] = {}
    for path, methods in doc["paths"].items():
        for method, described in methods.items():
            tag = described["tags"][0]
            group = groups.setdefault(tag, Group(tag, str(TAG_LABELS.get(tag, tag))))
            group.operations.append(
                _operation(path, method, described, doc["components"]["schemas"]))
    components = doc["components"]
    limit = next((p["schema"] for methods in doc["paths"].values()
                  for described in methods.values()
                  for p in described.get("parameters", []) if p["name"] == "limit"), {})
    operations = {op.anchor: op for group in groups.values() for op in group.operations}
    # Each shared error answer and its status, in the order of the statuses.
    error_statuses = dict(sorted({reply.error: reply.status for op in operations.values()
                                  for reply in op.replies if reply.error}.items(),
                                 key=lambda item: item[1]))
    return {"info": doc["info"], "groups": list(groups.values()), "operations": operations,
            "errors": components["responses"], "error_statuses": error_statuses,
            "schemas": {name: {"type": type_of(schema),
                               "description": schema.get("description"),
                               "shapes": shapes_of(schema)}
                        for name, schema in components["schemas"].items()},
            "limit": limit}


@blueprint.get("/api/docs")
def api_reference():
    """The API reference (public, as /api/openapi.json is)."""
    return page("api/reference.html", body=_rendered(current_language()))


@cache
def _rendered(language: str) -> Markup:
    """The reference in `language`, rendered once per process: the document changes only
    with a deploy, and a public page this long (400 kB) should cost no more than the others."""
    return Markup(render_template(
        "api/_reference.html", reference=reference(document()), key_prefix=API_KEY_PREFIX,
        token_hours=current_app.config["JWT_LIFETIME"] // timedelta(hours=1)))
