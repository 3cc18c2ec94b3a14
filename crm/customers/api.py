"""The CRM's JSON API: customers, their timeline, the pipeline's stages and segments. Thin:
every read and write is a service of crm/customers/services.py.

JSON bodies are checked for their documented types here (a form may send "12" for an id, a
JSON client must send 12); what the values mean is checked by the services, as for the pages.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import request
from flask_babel import gettext as _
from flask_login import current_user

from crm.api import blueprint as api
from crm.api import openapi
from crm.api.conditional import answer_stale_with, if_match, tagged
from crm.api.helpers import decode_cursor, json_body, page, page_limit
from crm.api.openapi import (
    BIGINT_MAX,
    CURSOR_PARAMETERS,
    list_of,
    operation,
    path_id,
    ref,
    versioned,
)
from crm.customers import services
from crm.customers.models import ACTIVITY_TYPES, SOURCES, CustomerActivity, SalesStage, Segment
from crm.customers.models import Customer as CustomerModel
from crm.customers.services import scoring
from crm.errors import NotFoundError, ValidationError
from crm.foundation.models import User
from crm.i18n import current_language
from crm.permissions import require

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 UTC timestamp ("...Z"), or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _all_required(properties: dict, required: tuple[str, ...] | None = None) -> dict:
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required)}


def _me() -> User:
    return current_user._get_current_object()


def _typed(data: dict, types: dict[str, tuple]) -> dict:
    """Refuse body values of another JSON type than documented (422 naming each field)."""
    errors = {}
    for key, allowed in types.items():
        if key not in data:
            continue
        value = data[key]
        if value is None or isinstance(value, bool):
            ok = type(value) in allowed
        else:
            ok = isinstance(value, tuple(t for t in allowed if t not in (type(None), bool)))
        if not ok:
            errors[key] = _("This value has the wrong type.")
    if errors:
        raise ValidationError(errors)
    return data


_NULL = type(None)
_CUSTOMER_TYPES = {"name": (str,), "phone": (str, _NULL), "email": (str, _NULL),
                   "company": (str,), "owner_id": (int, _NULL), "stage_id": (int, _NULL),
                   "tags": (list,), "notes": (str,), "custom_fields": (dict,),
                   "add_tags": (list,), "remove_tags": (list,)}
_FILTER_TYPES = {"search": (str,), "stage_id": (int,), "owner_id": (int,), "tag": (str,),
                 "source": (str,), "score_min": (int,), "score_max": (int,)}


# -- serialization ------------------------------------------------------------------------

def customer_json(customer: CustomerModel) -> dict:
    return {"id": customer.id, "name": customer.name, "phone": customer.phone,
            "email": customer.email, "company": customer.company,
            "owner_id": customer.owner_id, "stage_id": customer.stage_id,
            "tags": list(customer.tags), "source": customer.source,
            "custom_fields": customer.custom_fields, "notes": customer.notes,
            "score": customer.score, "score_explanation": scoring.explain_score(customer),
            "last_contacted_at": iso(customer.last_contacted_at),
            "created_at": iso(customer.created_at), "updated_at": iso(customer.updated_at),
            "version": customer.version, "edited_by_id": customer.edited_by_id,
            "edited_at": iso(customer.edited_at)}


answer_stale_with(CustomerModel, customer_json)


def activity_json(activity: CustomerActivity, readable: frozenset[int] = frozenset()) -> dict:
    """An activity; a message not among the `readable` ones comes without its text."""
    hidden = services.text_hidden(activity, readable)
    return {"id": activity.id, "customer_id": activity.customer_id, "type": activity.type,
            "body": "" if hidden else activity.body, "body_hidden": hidden,
            "data": activity.data, "due_at": iso(activity.due_at),
            "assignee_id": activity.assignee_id, "done_at": iso(activity.done_at),
            "actor_id": activity.actor_id, "created_at": iso(activity.created_at)}


def stage_json(stage: SalesStage) -> dict:
    return {"id": stage.id, "name": stage.name_in(current_language()),
            "name_ar": stage.name_ar, "name_en": stage.name_en, "position": stage.position,
            "color": stage.color, "is_won": stage.is_won, "is_lost": stage.is_lost}


def segment_json(segment: Segment) -> dict:
    return {"id": segment.id, "name": segment.name, "filters": segment.filters,
            "created_at": iso(segment.created_at)}


def _customer_page(filters: services.CustomerFilters) -> dict:
    rows, cursor = services.list_customers(filters, request.args.get("cursor") or None,
                                           page_limit())
    return {"items": [customer_json(c) for c in rows], "next_cursor": cursor}


# -- customers ------------------------------------------------------------------------------

@api.get("/crm/customers")
@require("crm", "read")
def list_customers():
    return _customer_page(services.parse_filters(request.args, strict=True))


@api.post("/crm/customers")
@require("crm", "write")
def create_customer():
    data = _typed(json_body(), _CUSTOMER_TYPES)
    return customer_json(services.create_customer(_me(), data, source="api")), 201


@api.get("/crm/customers/<int:customer_id>")
@require("crm", "read")
def show_customer(customer_id: int):
    customer = services.access_customer(customer_id)
    return tagged(customer_json(customer), customer)


@api.patch("/crm/customers/<int:customer_id>")
@require("crm", "write")
def update_customer(customer_id: int):
    customer = services.access_customer(customer_id)
    data = _typed(json_body(), _CUSTOMER_TYPES)
    services.update_customer(_me(), customer, data, expected_version=if_match())
    return tagged(customer_json(customer), customer)


@api.delete("/crm/customers/<int:customer_id>")
@require("crm", "write")
def delete_customer(customer_id: int):
    services.delete_customer(_me(), services.access_customer(customer_id))
    return "", 204


@api.post("/crm/customers/<int:customer_id>/merge")
@require("crm", "write")
def merge_customer(customer_id: int):
    survivor = services.access_customer(customer_id)
    data = json_body()
    duplicate_id = data.get("duplicate_id")
    if isinstance(duplicate_id, bool) or not isinstance(duplicate_id, int) \
            or not 0 <= duplicate_id <= BIGINT_MAX:
        raise ValidationError({"duplicate_id": _("Choose another customer to merge.")})
    try:
        duplicate = services.access_customer(duplicate_id)
    except NotFoundError:
        raise ValidationError({"duplicate_id": _("Choose another customer to merge.")}) from None
    return customer_json(services.merge_customers(_me(), survivor, duplicate))


@api.post("/crm/customers/<int:customer_id>/activity")
@require("crm", "write")
def add_activity(customer_id: int):
    customer = services.access_customer(customer_id)
    data = _typed(json_body(), {"type": (str,), "body": (str,), "due_at": (str, _NULL),
                                "assignee_id": (int, _NULL)})
    if data.get("due_at") is not None and not _RFC3339.fullmatch(data["due_at"]):
        raise ValidationError({"due_at": _("Enter a date and time.")})
    activity = services.add_activity(_me(), customer, data.get("type"), data.get("body"),
                                     data.get("due_at"), data.get("assignee_id"))
    return activity_json(activity), 201


@api.get("/crm/customers/<int:customer_id>/activities")
@require("crm", "read")
def list_activities(customer_id: int):
    customer = services.access_customer(customer_id)
    activities, before_id = services.list_activities(customer, decode_cursor(), page_limit())
    readable = services.readable_messages(activities, _me())
    return page(activities, before_id, lambda activity: activity_json(activity, readable))


# -- stages ---------------------------------------------------------------------------------

@api.get("/crm/sales-stages")
@require("crm", "read")
def list_stages():
    return page(services.list_stages(), None, stage_json)


_STAGE_TYPES = {"name_ar": (str,), "name_en": (str,), "color": (str,), "is_won": (bool,),
                "is_lost": (bool,)}


# Editing the pipeline is an admin setting of the CRM: the settings area's "write" (admins
# only), inside the CRM's switch.
@api.post("/crm/sales-stages")
@require("settings", "write")
@require("crm", "write")
def create_stage():
    data = _typed(json_body(), _STAGE_TYPES)
    return stage_json(services.create_stage(_me(), data)), 201


@api.patch("/crm/sales-stages/<int:stage_id>")
@require("settings", "write")
@require("crm", "write")
def update_stage(stage_id: int):
    stage = services.access_stage(stage_id)
    data = _typed(json_body(), _STAGE_TYPES)
    return stage_json(services.update_stage(_me(), stage, data))


@api.delete("/crm/sales-stages/<int:stage_id>")
@require("settings", "write")
@require("crm", "write")
def delete_stage(stage_id: int):
    services.delete_stage(_me(), services.access_stage(stage_id))
    return "", 204


# -- segments -------------------------------------------------------------------------------

@api.get("/crm/segments")
@require("crm", "read")
def list_segments():
    return page(services.list_segments(), None, segment_json)


@api.post("/crm/segments")
@require("crm", "write")
def create_segment():
    data = _typed(json_body(), {"name": (str,), "filters": (dict,)})
    filters = services.parse_filters(_typed(data.get("filters") or {}, _FILTER_TYPES),
                                     strict=True)
    return segment_json(services.create_segment(_me(), data.get("name"), filters)), 201


@api.get("/crm/segments/<int:segment_id>/customers")
@require("crm", "read")
def segment_customers(segment_id: int):
    segment = services.access_segment(segment_id)
    return _customer_page(services.segment_filters(segment))


# -- the document -------------------------------------------------------------------------

def _object(properties: dict, required: tuple[str, ...] | None = None) -> dict:
    """An object schema; OpenAPI 3.0 wants `required` left out rather than empty."""
    schema = _all_required(properties, required)
    if not schema["required"]:
        del schema["required"]
    return schema


_ID = {"type": "integer", "format": "int64"}
_REF_ID = {"type": "integer", "format": "int64", "minimum": 0, "maximum": BIGINT_MAX}
_NULLABLE_ID = {**_REF_ID, "nullable": True}
_TIME = {"type": "string", "format": "date-time"}
_OPTIONAL_TIME = {**_TIME, "nullable": True}
_TEXT = {"type": "string"}
_SCORE = {"type": "integer", "minimum": -services.SCORE_LIMIT, "maximum": services.SCORE_LIMIT}

_CUSTOMER_BODY = {
    "name": {"type": "string", "minLength": 1, "maxLength": 160},
    "phone": {"type": "string", "maxLength": 40, "nullable": True,
              "description": "Any written form (0501234567, +966 50 123 4567, "
                             "٠٥٠١٢٣٤٥٦٧); stored in E.164 with the organization's country."},
    "email": {"type": "string", "maxLength": 254, "nullable": True,
              "description": "An email address; empty or null for none."},
    "company": {"type": "string", "maxLength": 160},
    "owner_id": {**_NULLABLE_ID, "description": "A user of the organization."},
    "stage_id": {**_NULLABLE_ID, "description": "A sales stage; changing it moves the "
                                                "customer on the board and logs an activity."},
    "tags": {"type": "array", "maxItems": services.MAX_TAGS,
             "items": {"type": "string", "maxLength": 40}},
    "notes": {"type": "string", "maxLength": 10_000},
    "custom_fields": {"type": "object", "description": "Custom field key to value (text, "
                                                       "number, YYYY-MM-DD, or one of the "
                                                       "choices); null or empty removes it."},
}
_TAG_CHANGES = {
    "add_tags": {"type": "array", "maxItems": services.MAX_TAGS,
                 "items": {"type": "string", "maxLength": 40},
                 "description": "Tags to add to those the customer has when the change is "
                                "made (one already there is kept once); unlike `tags`, "
                                "this never drops a tag someone else added meanwhile. Not "
                                "with `tags`."},
    "remove_tags": {"type": "array", "maxItems": services.MAX_TAGS,
                    "items": {"type": "string", "maxLength": 40},
                    "description": "Tags to take away from those the customer has when the "
                                   "change is made. Not with `tags`."},
}
_FILTERS = {
    "search": {"type": "string", "maxLength": 200,
               "description": "Name (Arabic letter variants ignored), phone in any written "
                              "form, or email."},
    "stage_id": _REF_ID, "owner_id": _REF_ID,
    "tag": {"type": "string", "maxLength": 40},
    "source": {"type": "string", "enum": list(SOURCES)},
    "score_min": _SCORE, "score_max": _SCORE,
}
_LIST_PARAMETERS = (
    *({"name": name, "in": "query", "required": False, "schema": schema}
      for name, schema in _FILTERS.items()),
    {"name": "sort", "in": "query", "required": False,
     "schema": {"type": "string", "enum": list(services.SORTS), "default": "newest"}},
    *CURSOR_PARAMETERS,
)
_LIST_DESCRIPTION = ("Filters as query parameters; a custom field filters as cf_<key>=<value>. "
                     "An empty parameter or an unknown custom field is a 422.")

SCHEMAS = {
    "Customer": _object({
        "id": _ID, "name": _TEXT, "phone": {**_TEXT, "nullable": True},
        "email": {**_TEXT, "nullable": True}, "company": _TEXT,
        "owner_id": {**_ID, "nullable": True}, "stage_id": {**_ID, "nullable": True},
        "tags": {"type": "array", "items": _TEXT},
        "source": {"type": "string", "enum": list(SOURCES)},
        "custom_fields": {"type": "object"}, "notes": _TEXT, "score": {"type": "integer"},
        "score_explanation": {"type": "array", "items": _TEXT,
                              "description": "Why the score is what it is, one line per "
                                             "rule, in the caller's language."},
        "last_contacted_at": _OPTIONAL_TIME, "created_at": _TIME, "updated_at": _TIME,
        "version": {"type": "integer", "minimum": 1,
                    "description": "Counts the edits people made; the ETag."},
        "edited_by_id": {**_ID, "nullable": True,
                         "description": "Who made the last edit (null before any, or for an "
                                        "edit of the system's)."},
        "edited_at": {**_OPTIONAL_TIME, "description": "When the last edit was made."}}),
    "Activity": _object({
        "id": _ID, "customer_id": _ID, "type": _TEXT,
        "body": {"type": "string", "description": "Empty when there is none, or when "
                                                  "`body_hidden`."},
        "body_hidden": {"type": "boolean", "description": "A WhatsApp message of a "
                        "conversation not assigned to the calling agent: its text is left out."},
        "data": {"type": "object"}, "due_at": _OPTIONAL_TIME,
        "assignee_id": {**_ID, "nullable": True}, "done_at": _OPTIONAL_TIME,
        "actor_id": {**_ID, "nullable": True}, "created_at": _TIME}),
    "SalesStage": _object({
        "id": _ID, "name": {**_TEXT, "description": "In the caller's language."},
        "name_ar": _TEXT, "name_en": _TEXT, "position": {"type": "integer"},
        "color": _TEXT, "is_won": {"type": "boolean"}, "is_lost": {"type": "boolean"}}),
    "Segment": _object({"id": _ID, "name": _TEXT, "filters": {"type": "object"},
                        "created_at": _TIME}),
}

_CUSTOMER_ID = (path_id("customer_id"),)
_STAGE_ID = (path_id("stage_id"),)
_STAGE_BODY = {"name_ar": {"type": "string", "minLength": 1, "maxLength": 80},
               "name_en": {"type": "string", "minLength": 1, "maxLength": 80},
               "color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
               "is_won": {"type": "boolean"}, "is_lost": {"type": "boolean"}}


def _list_operation(summary: str, parameters: tuple[dict, ...] = ()) -> dict:
    op = operation(summary, tag="crm", status=200, permission=True,
                   response=list_of("Customer"), parameters=parameters, errors=(422,))
    op["description"] = _LIST_DESCRIPTION
    return op


openapi.register({
    "/api/crm/customers": {
        "get": _list_operation("List, filter and search customers", _LIST_PARAMETERS),
        "post": operation("Add a customer", tag="crm", status=201, permission=True,
                          response=ref("Customer"), errors=(409,),
                          body=_object(_CUSTOMER_BODY, ("name",))),
    },
    "/api/crm/customers/{customer_id}": {
        "get": versioned(operation("One customer", tag="crm", status=200, permission=True,
                                   response=ref("Customer"), parameters=_CUSTOMER_ID),
                         "Customer"),
        "patch": versioned(operation(
            "Change a customer (only the fields sent)", tag="crm", status=200,
            permission=True, response=ref("Customer"), parameters=_CUSTOMER_ID,
            errors=(409,), body=_object({**_CUSTOMER_BODY, **_TAG_CHANGES}, ())),
            "Customer", writes=True),
        "delete": operation("Delete a customer and their timeline", tag="crm", status=204,
                            permission=True, parameters=_CUSTOMER_ID),
    },
    "/api/crm/customers/{customer_id}/merge": {"post": operation(
        "Merge a duplicate into this customer (activities and conversations move)",
        tag="crm", status=200, permission=True, response=ref("Customer"),
        parameters=_CUSTOMER_ID, body=_object({"duplicate_id": _REF_ID}))},
    "/api/crm/customers/{customer_id}/activity": {"post": operation(
        "Log a note, call, meeting or task", tag="crm", status=201, permission=True,
        response=ref("Activity"), parameters=_CUSTOMER_ID,
        body=_object({"type": {"type": "string", "enum": list(ACTIVITY_TYPES)},
                      "body": {"type": "string", "minLength": 1, "maxLength": 5000},
                      "due_at": {**_OPTIONAL_TIME, "description": "RFC 3339, with an offset."},
                      "assignee_id": _NULLABLE_ID}, ("type", "body")))},
    "/api/crm/customers/{customer_id}/activities": {"get": operation(
        "The customer's timeline, newest first", tag="crm", status=200, permission=True,
        response=list_of("Activity"), parameters=(*_CUSTOMER_ID, *CURSOR_PARAMETERS),
        errors=(422,))},
    "/api/crm/sales-stages": {
        "get": operation("The pipeline's stages in order", tag="crm", status=200,
                         permission=True, response=list_of("SalesStage")),
        "post": operation("Add a stage at the end of the pipeline (admins)", tag="crm",
                          status=201, permission=True, response=ref("SalesStage"),
                          body=_object(_STAGE_BODY, ("name_ar", "name_en"))),
    },
    "/api/crm/sales-stages/{stage_id}": {
        "patch": operation("Rename, recolour or flag a stage (admins)", tag="crm", status=200,
                           permission=True, response=ref("SalesStage"), parameters=_STAGE_ID,
                           body=_object(_STAGE_BODY, ())),
        "delete": operation("Delete a stage; its customers move to the first remaining one "
                            "(admins)", tag="crm", status=204, permission=True,
                            parameters=_STAGE_ID, errors=(409,)),
    },
    "/api/crm/segments": {
        "get": operation("Saved filters of customers", tag="crm", status=200,
                         permission=True, response=list_of("Segment")),
        "post": operation("Save a filter of customers under a name", tag="crm", status=201,
                          permission=True, response=ref("Segment"),
                          body=_object({"name": {"type": "string", "minLength": 1,
                                                 "maxLength": 120},
                                        "filters": _object(_FILTERS, ())}, ("name",))),
    },
    "/api/crm/segments/{segment_id}/customers": {"get": operation(
        "The customers a segment selects now", tag="crm", status=200, permission=True,
        response=list_of("Customer"), parameters=(path_id("segment_id"), *CURSOR_PARAMETERS),
        errors=(422,))},
}, SCHEMAS)
