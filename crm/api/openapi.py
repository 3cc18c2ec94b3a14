"""The OpenAPI document of /api, assembled from what each module's api.py registers.

A module describes its operations next to its routes with `operation()` (and `versioned()` for
objects with an ETag) and hands them to `register()`; the document is built from the registry
when /api/openapi.json is asked for. A test walks `app.url_map` and fails when a route and the
document disagree, and schemathesis checks every answer against it.
"""

from __future__ import annotations

import re
from typing import Any

from flask import jsonify

from crm.api import blueprint as api
from crm.json_input import MAX_DEPTH
from crm.validation import BIGINT_MAX

OPENAPI_VERSION = "3.0.3"

ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The body is not a JSON object (malformed JSON, invalid UTF-8, "
                        f"wrong Content-Type, nested more than {MAX_DEPTH} levels deep, a "
                        "field name that is not text)."),
    401: ("Unauthorized", "No valid bearer token, or the credentials are wrong."),
    403: ("Forbidden", "The caller's role does not allow this."),
    404: ("NotFound", "No such object in the caller's organization."),
    409: ("Conflict", "The request conflicts with the current state."),
    413: ("TooLarge", "The body is larger than the server accepts."),
    422: ("ValidationFailed", "Some fields are invalid, or not fields of this body; `fields` "
                              "names each one."),
    429: ("RateLimited", "Too many attempts; try again later."),
    503: ("Unavailable", "The database or Redis is briefly down; try again after the "
                         "Retry-After header's seconds."),
}

_paths: dict[str, dict[str, dict]] = {}
_schemas: dict[str, dict] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string", "example": "validation_error"},
                "message": {"type": "string", "description": "In the caller's language."},
                "fields": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "Field name to what is wrong with it."},
            },
        }},
    },
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def object_schema(properties: dict, required: tuple[str, ...] | None = None) -> dict:
    """An object with `properties`, all of them required unless `required` names fewer."""
    names = list(properties if required is None else required)
    # OpenAPI 3.0 forbids an empty `required` list.
    return {"type": "object", "properties": properties} | ({"required": names} if names else {})


def list_of(name: str) -> dict:
    """The list envelope every collection answers with: items and a keyset cursor."""
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref(name)},
            "next_cursor": {"type": "string", "nullable": True,
                            "description": "Pass as `cursor` for the next page; null on the last."},
        },
    }


def path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "format": "int64", "minimum": 0,
                       "maximum": BIGINT_MAX}}


CURSOR_PARAMETERS = (
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "The `next_cursor` of the previous page."},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
)


def operation(summary: str, *, tag: str, status: int, response: dict | None = None,
              body: dict | None = None, public: bool = False, permission: bool = False,
              parameters: tuple[dict, ...] = (), errors: tuple[int, ...] = ()) -> dict:
    """Describe one operation; the errors that follow from its shape are added by themselves.

    A JSON body can answer 400, 413 and 422; a bearer-only operation 401, and 429 past its
    organization's allowance; one guarded by a role 403; a path id 404; any of them 503.
    """
    implied = set(errors) | {503}
    if body is not None:
        implied |= {400, 413, 422}
    if not public:
        implied |= {401, 429}
    if permission:
        implied.add(403)
    if any(p["in"] == "path" for p in parameters):
        implied.add(404)
    success: dict[str, Any] = {"description": summary}
    if response is not None:
        success["content"] = {"application/json": {"schema": response}}
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {str(status): success} | {
            str(code): {"$ref": f"#/components/responses/{ERROR_RESPONSES[code][0]}"}
            for code in sorted(implied)},
    }
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _closed(body)}}}
    if public:
        op["security"] = []
    return op


_ETAG = {"ETag": {
    "required": True, "schema": {"type": "string", "example": '"3"'},
    "description": "The object's version, strong and quoted. Send it back as If-Match to "
                   "change the object only if nobody has changed it since."}}
_IF_MATCH = {
    "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "The ETag this change starts from (\"3\"). If someone changed the object "
                   "since, the answer is 412 with the object as it is now. Without it, or "
                   "with *, the change is made whatever the version."}


def versioned(op: dict, schema: str, *, writes: bool = False) -> dict:
    """Document that `op` answers the ETag of the `schema` object it answers with; an edit
    (`writes`) also takes If-Match and can answer 412 with the object as it is now
    (crm/api/conditional.py)."""
    success = next(code for code in op["responses"] if code.startswith("2"))
    op["responses"][success]["headers"] = _ETAG
    if writes:
        op["parameters"] = [*op.get("parameters", []), _IF_MATCH]
        op["responses"]["412"] = {
            "description": "Someone changed the object since the If-Match version; "
                           "`current` is what it is now, and the ETag its version.",
            "headers": _ETAG,
            "content": {"application/json": {"schema": {"allOf": [
                ref("Error"),
                {"type": "object", "required": ["current"],
                 "properties": {"current": ref(schema)}}]}}}}
    return op


def _closed(schema: dict) -> dict:
    """A body schema that allows no field besides those it declares (json_body() refuses any
    other): each alternative of a oneOf is closed, as the whole would allow nothing."""
    if "oneOf" in schema:
        return {**schema, "oneOf": [_closed(alternative) for alternative in schema["oneOf"]]}
    return {**schema, "additionalProperties": False}


def document_path(rule: str) -> str:
    """The document's path of a Flask rule: /api/users/<int:user_id> is /api/users/{user_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def body_fields(rule: str, method: str) -> frozenset[str]:
    """The fields the JSON body of an operation declares, by its Flask `rule` and `method`;
    none when it declares no JSON body."""
    operation = _paths.get(document_path(rule), {}).get(method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    return frozenset(name for alternative in schema.get("oneOf", [schema])
                     for name in alternative.get("properties", {}))


def register(paths: dict[str, dict[str, dict]], schemas: dict[str, dict] | None = None) -> None:
    """Add a module's operations and schemas; describing one twice is a mistake, so it fails."""
    for path, methods in paths.items():
        known = _paths.setdefault(path, {})
        if clash := known.keys() & methods.keys():
            raise ValueError(f"{path} {sorted(clash)} is already documented")
        known.update(methods)
    for name, schema in (schemas or {}).items():
        if name in _schemas:
            raise ValueError(f"schema {name} is already defined")
        _schemas[name] = schema


def document() -> dict:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Wasl API", "version": "1",
                 "description": "JSON bodies in snake_case; bearer tokens; errors as "
                                "{\"error\": {\"code\", \"message\", \"fields\"}}. "
                                "Objects people edit answer an ETag (their version); "
                                "send it as If-Match so that a change made meanwhile by "
                                "someone else is not overwritten (412 with `current`)."},
        "paths": {path: dict(methods) for path, methods in sorted(_paths.items())},
        "components": {
            "schemas": dict(_schemas),
            "responses": {
                name: {"description": description,
                       "content": {"application/json": {"schema": ref("Error")}}}
                for name, description in ERROR_RESPONSES.values()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


@api.get("/openapi.json")
def openapi_json():
    return jsonify(document())


register({"/api/openapi.json": {"get": operation(
    "This OpenAPI document", tag="meta", status=200, public=True,
    response={"type": "object", "required": ["openapi", "paths"]})}})
