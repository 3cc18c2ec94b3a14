"""The OpenAPI 3.1 document of /api, generated from the operations the modules declare.

A module declares each operation where it routes it: `Endpoints(tag)` gives decorators that
register the Flask route and its description at once — the body, form or query model, the
answer model of each status, the errors its guards add — so a route cannot exist without a
description (crm/api/kit.py checks at run time that a handler uses the models it declares).
The schemas are the models' own JSON Schema; the errors that follow from an operation's shape
(a body can be malformed, a path id unknown, a guard refuse) are added by themselves. A test
walks `app.url_map` against the document, and schemathesis checks every answer against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask_babel import lazy_gettext
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import GenerateJsonSchema

from crm.api import blueprint
from crm.api.kit import DECLARED, Answer, answer
from crm.json_input import MAX_DEPTH
from crm.permissions import SWITCHABLE
from crm.validation import BIGINT_MAX

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"

ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The body is not a JSON object (malformed JSON, invalid UTF-8, "
                        f"wrong Content-Type, nested more than {MAX_DEPTH} levels deep, a "
                        "field name that is not text)."),
    401: ("Unauthorized", "No valid bearer token, or the credentials are wrong."),
    402: ("PlanRefused", "The organization's plan refuses it: a module the plan does not "
                         "include (`plan_module`), a limit reached (`plan_limit`, whose "
                         "`fields` are the `limit`, what is `used` and what is `allowed`), "
                         "or a write while the organization is read-only, a payment overdue "
                         "past its grace (`read_only`). The billing page offers the upgrade."),
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


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(description="In the caller's language.")
    fields: dict[str, str] = Field(description="Field name to what is wrong with it.")


class Error(BaseModel):
    """Every error's body (crm/web.py error_body)."""

    error: ErrorDetail


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str
    endpoint: str
    summary: str
    tag: str
    answers: dict[int, type[Answer] | None]
    body: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    public: bool = False
    guarded: bool = False  # by a role (@require): 403
    plan_refusable: bool = False  # by the plan (crm/permissions.py): 402
    etag: bool = False
    description: str | None = None
    path_ids: tuple[str, ...] = field(default=())


_operations: dict[tuple[str, str], Operation] = {}
# Each tag's name for people, in their language (the reference page, crm/api/reference.py).
TAG_LABELS: dict[str, Any] = {}


class Endpoints:
    """Route decorators of one tag, named for people by `label` (a lazy_gettext):
    `@crm.post("/crm/customers", "Add a customer", answers={201: Customer},
    body=NewCustomer)` above the view's guards.

    `etag`: the answer carries the object's version as ETag (crm/api/conditional.py); on a
    write, If-Match is taken and a stale one answers 412 with the object as it is now.
    """

    def __init__(self, tag: str, label: Any = None):
        self.tag = tag
        if label is not None:  # without one, the reference page shows the tag itself
            TAG_LABELS[tag] = label

    def get(self, rule: str, summary: str, **description: Any) -> Callable:
        return self.route("GET", rule, summary, **description)

    def post(self, rule: str, summary: str, **description: Any) -> Callable:
        return self.route("POST", rule, summary, **description)

    def put(self, rule: str, summary: str, **description: Any) -> Callable:
        return self.route("PUT", rule, summary, **description)

    def patch(self, rule: str, summary: str, **description: Any) -> Callable:
        return self.route("PATCH", rule, summary, **description)

    def delete(self, rule: str, summary: str, **description: Any) -> Callable:
        return self.route("DELETE", rule, summary, **description)

    def route(self, method: str, rule: str, summary: str, *,
              answers: dict[int, type[Answer] | None], body: type[BaseModel] | None = None,
              form: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              errors: tuple[int, ...] = (), public: bool = False, etag: bool = False,
              description: str | None = None) -> Callable:
        def decorate(view: Callable) -> Callable:
            endpoint = f"{blueprint.name}.{view.__name__}"
            operation = Operation(
                method, blueprint.url_prefix + rule, endpoint, summary, self.tag, answers,
                body, form, query, errors, public,
                guarded=hasattr(view, "required_permission"),
                plan_refusable=_plan_can_refuse(method, view), etag=etag,
                description=description, path_ids=tuple(re.findall(r"<int:(\w+)>", rule)))
            _register(operation)
            blueprint.add_url_rule(rule, view.__name__, view, methods=[method])
            return view

        return decorate


def _plan_can_refuse(method: str, view: Callable) -> bool:
    """Can the plan refuse this route (crm/permissions.py)? A module's, which a plan may
    leave out; a write, which a read-only organization may not make (billing's own
    excepted, so that it can pay). Services that count a limit name 402 in `errors`."""
    area, level = getattr(view, "required_permission", (None, None))
    return area in SWITCHABLE or (level == "write" and method != "GET")


def _register(operation: Operation) -> None:
    """Add an operation; describing one twice is a mistake, so it fails."""
    key = (document_path(operation.rule), operation.method.lower())
    if key in _operations:
        raise ValueError(f"{key} is already documented")
    _operations[key] = operation
    DECLARED[operation.endpoint] = {
        **{name: model for name, model in (("body", operation.body), ("form", operation.form),
                                           ("query", operation.query)) if model},
        **operation.answers}


def document_path(rule: str) -> str:
    """The document's path of a Flask rule: /api/users/<int:user_id> is /api/users/{user_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


# -- the document ---------------------------------------------------------------------------

class _Schema(GenerateJsonSchema):
    """pydantic's JSON Schema without a title on every field (the name says it), nor a null
    default (a field left out is just not given)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: Any) -> dict:
        described = super().default_schema(schema)
        if "default" in described and described["default"] is None:
            del described["default"]
        return described


class _Components:
    """components/schemas, filled as the operations' models are described."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict] = {}
        self.ref(Error, "serialization")

    def ref(self, model: type[BaseModel], mode: str) -> dict:
        self.add(model.__name__, self.inline(model, mode))
        return {"$ref": REF.format(model=model.__name__)}

    def inline(self, model: type[BaseModel], mode: str) -> dict:
        schema = model.model_json_schema(ref_template=REF, mode=mode, schema_generator=_Schema)
        for name, definition in schema.pop("$defs", {}).items():
            self.add(name, definition)
        return schema

    def add(self, name: str, schema: dict) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name}")


_ETAG = {"ETag": {
    "required": True, "schema": {"type": "string", "examples": ['"3"']},
    "description": "The object's version, strong and quoted. Send it back as If-Match to "
                   "change the object only if nobody has changed it since."}}
_IF_MATCH = {
    "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "The ETag this change starts from (\"3\"). If someone changed the object "
                   "since, the answer is 412 with the object as it is now. Without it, or "
                   "with *, the change is made whatever the version."}


def _describe(op: Operation, components: _Components) -> dict:
    """One operation: its answers, implied errors, parameters and body."""
    implied = set(op.errors) | {503}
    if op.body or op.form:
        implied |= {400, 413, 422}
    if op.query:
        implied.add(422)
    if not op.public:
        implied |= {401, 429}
    if op.guarded:
        implied.add(403)
    if op.plan_refusable:
        implied.add(402)
    if op.path_ids:
        implied.add(404)
    responses: dict[str, dict] = {}
    for status, model in op.answers.items():
        responses[str(status)] = {"description": op.summary} | (
            {"content": {"application/json": {"schema": components.ref(model, "serialization")}}}
            if model else {})
    responses |= {str(code): {"$ref": f"#/components/responses/{ERROR_RESPONSES[code][0]}"}
                  for code in sorted(implied)}
    described: dict[str, Any] = {"summary": op.summary, "operationId": op.endpoint[4:],
                                 "tags": [op.tag], "responses": responses}
    if op.description:
        described["description"] = op.description
    parameters = [*map(_path_parameter, op.path_ids), *_query_parameters(op.query, components)]
    if op.etag:
        _versioned(op, described, parameters, components)
    if parameters:
        described["parameters"] = parameters
    content = {}
    if op.body:
        content["application/json"] = {"schema": components.inline(op.body, "validation")}
    if op.form:
        content["multipart/form-data"] = {"schema": components.inline(op.form, "validation")}
    if content:
        described["requestBody"] = {"required": True, "content": content}
    if op.public:
        described["security"] = []
    return described


def _path_parameter(name: str) -> dict:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "format": "int64", "minimum": 0,
                       "maximum": BIGINT_MAX}}


def _query_parameters(model: type[BaseModel] | None, components: _Components) -> list[dict]:
    """A query model's fields as parameters; absent, never null (a URL has no null)."""
    if model is None:
        return []
    schema = components.inline(model, "validation")
    parameters = []
    for name, prop in schema["properties"].items():
        alternatives = [p for p in prop.get("anyOf", []) if p != {"type": "null"}]
        if len(alternatives) == 1:
            prop = {key: value for key, value in prop.items() if key != "anyOf"} \
                | alternatives[0]
        prop = dict(prop)
        described = prop.pop("description", None)
        parameters.append({"name": name, "in": "query",
                           "required": name in schema.get("required", ()), "schema": prop}
                          | ({"description": described} if described else {}))
    return parameters


def _versioned(op: Operation, described: dict, parameters: list[dict],
               components: _Components) -> None:
    """The ETag of the success answer; a write also takes If-Match and can answer 412 with
    the object as it is now (crm/api/conditional.py)."""
    status, model = next((s, m) for s, m in op.answers.items() if 200 <= s < 300)
    described["responses"][str(status)]["headers"] = _ETAG
    if op.method == "GET":
        return
    parameters.append(_IF_MATCH)
    described["responses"]["412"] = {
        "description": "Someone changed the object since the If-Match version; "
                       "`current` is what it is now, and the ETag its version.",
        "headers": _ETAG,
        "content": {"application/json": {"schema": {"allOf": [
            {"$ref": REF.format(model="Error")},
            {"type": "object", "required": ["current"],
             "properties": {"current": components.ref(model, "serialization")}}]}}}}


@cache
def document() -> dict:
    """The whole document (built once: operations are declared when the app is imported)."""
    components = _Components()
    paths: dict[str, dict] = {}
    for (path, method), op in sorted(_operations.items()):
        paths.setdefault(path, {})[method] = _describe(op, components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Wasl API", "version": "1",
                 "description": "JSON bodies in snake_case; bearer tokens; errors as "
                                "{\"error\": {\"code\", \"message\", \"fields\"}}. "
                                "Objects people edit answer an ETag (their version); "
                                "send it as If-Match so that a change made meanwhile by "
                                "someone else is not overwritten (412 with `current`)."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "responses": {
                name: {"description": description,
                       "content": {"application/json": {"schema": {
                           "$ref": REF.format(model="Error")}}}}
                for name, description in ERROR_RESPONSES.values()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


class OpenAPIDocument(Answer):
    """An OpenAPI 3.1 document."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    paths: dict[str, Any]


meta = Endpoints("meta", lazy_gettext("About the API"))


@meta.get("/openapi.json", "This OpenAPI document", answers={200: OpenAPIDocument},
          public=True)
def openapi_json():
    return answer(OpenAPIDocument, document())

