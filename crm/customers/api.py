"""The CRM's JSON API: customers, their timeline, the pipeline's stages and segments. Thin:
every read and write is a service of crm/customers/services.py; bodies and answers are
declared in crm/customers/schemas.py."""

from __future__ import annotations

from flask import Response, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from crm.api.conditional import answer_stale_with, if_match, tagged
from crm.api.helpers import decode_cursor, encode_cursor
from crm.api.kit import (
    Page,
    PageQuery,
    answer,
    as_dicts,
    columns_of,
    no_content,
    parse,
    parse_query,
)
from crm.api.openapi import Endpoints
from crm.customers import schemas, services
from crm.customers.models import Customer
from crm.errors import NotFoundError, ValidationError
from crm.permissions import require
from crm.web import me

crm = Endpoints("crm", lazy_gettext("Customers (CRM)"))
answer_stale_with(Customer, schemas.Customer)

_LIST = ("Filters as query parameters; a custom field filters as cf_<key>=<value>. An empty "
         "parameter or an unknown custom field is a 422.")


# What a customer's answer reads: a list loads these columns as rows, not objects.
_ANSWERED = columns_of(schemas.Customer, Customer)


def _customer_page(filters: services.CustomerFilters, query: PageQuery) -> Response:
    rows, cursor = services.list_customers(filters, query.cursor or None, query.limit,
                                           columns=_ANSWERED)
    return answer(Page[schemas.Customer],
                  {"items": as_dicts(rows), "next_cursor": cursor})


# -- customers ------------------------------------------------------------------------------

@crm.get("/crm/customers", "List, filter and search customers", query=schemas.CustomerQuery,
         answers={200: Page[schemas.Customer]}, description=_LIST)
@require("crm", "read")
def list_customers() -> Response:
    query = parse_query(schemas.CustomerQuery)
    return _customer_page(services.parse_filters(request.args, strict=True), query)


@crm.post("/crm/customers", "Add a customer", body=schemas.NewCustomer,
          answers={201: schemas.Customer}, errors=(409,))
@require("crm", "write")
def create_customer() -> Response:
    body = parse(schemas.NewCustomer)
    customer = services.create_customer(me(), body.model_dump(exclude_unset=True),
                                        source="api")
    return answer(schemas.Customer, customer, 201)


@crm.get("/crm/customers/<int:customer_id>", "One customer", answers={200: schemas.Customer},
         etag=True)
@require("crm", "read")
def show_customer(customer_id: int) -> Response:
    customer = services.access_customer(customer_id)
    return tagged(answer(schemas.Customer, customer), customer)


@crm.patch("/crm/customers/<int:customer_id>", "Change a customer (only the fields sent)",
           body=schemas.CustomerChange, answers={200: schemas.Customer}, errors=(409,),
           etag=True)
@require("crm", "write")
def update_customer(customer_id: int) -> Response:
    customer = services.access_customer(customer_id)
    body = parse(schemas.CustomerChange)
    services.update_customer(me(), customer, body.model_dump(exclude_unset=True),
                             expected_version=if_match())
    return tagged(answer(schemas.Customer, customer), customer)


@crm.delete("/crm/customers/<int:customer_id>", "Delete a customer and their timeline",
            answers={204: None})
@require("crm", "write")
def delete_customer(customer_id: int) -> Response:
    services.delete_customer(me(), services.access_customer(customer_id))
    return no_content()


@crm.post("/crm/customers/<int:customer_id>/merge", "Merge a duplicate into this customer "
          "(activities and conversations move)", body=schemas.Merge,
          answers={200: schemas.Customer})
@require("crm", "write")
def merge_customer(customer_id: int) -> Response:
    survivor = services.access_customer(customer_id)
    body = parse(schemas.Merge)
    try:
        duplicate = services.access_customer(body.duplicate_id)
    except NotFoundError:
        raise ValidationError({"duplicate_id": _("Choose another customer to merge.")}) from None
    return answer(schemas.Customer, services.merge_customers(me(), survivor, duplicate))


@crm.post("/crm/customers/<int:customer_id>/activity", "Log a note, call, meeting or task",
          body=schemas.NewActivity, answers={201: schemas.Activity})
@require("crm", "write")
def add_activity(customer_id: int) -> Response:
    customer = services.access_customer(customer_id)
    body = parse(schemas.NewActivity)
    activity = services.add_activity(me(), customer, body.type, body.body, body.due_at,
                                     body.assignee_id)
    return answer(schemas.Activity, activity, 201)


@crm.get("/crm/customers/<int:customer_id>/activities", "The customer's timeline, newest "
         "first", query=PageQuery, answers={200: Page[schemas.Activity]})
@require("crm", "read")
def list_activities(customer_id: int) -> Response:
    customer = services.access_customer(customer_id)
    query = parse_query(PageQuery)
    activities, before_id = services.list_activities(customer, decode_cursor(query.cursor),
                                                     query.limit)
    return answer(Page[schemas.Activity],
                  {"items": activities, "next_cursor": encode_cursor(before_id)},
                  context={"readable": services.readable_messages(activities, me())})


# -- stages ---------------------------------------------------------------------------------

@crm.get("/crm/sales-stages", "The pipeline's stages in order",
         answers={200: Page[schemas.SalesStage]})
@require("crm", "read")
def list_stages() -> Response:
    return answer(Page[schemas.SalesStage],
                  {"items": services.list_stages(), "next_cursor": None})


# Editing the pipeline is an admin setting of the CRM: the settings area's "write" (admins
# only), inside the CRM's switch.
@crm.post("/crm/sales-stages", "Add a stage at the end of the pipeline (admins)",
          body=schemas.NewStage, answers={201: schemas.SalesStage})
@require("settings", "write")
@require("crm", "write")
def create_stage() -> Response:
    body = parse(schemas.NewStage)
    stage = services.create_stage(me(), body.model_dump(exclude_unset=True))
    return answer(schemas.SalesStage, stage, 201)


@crm.patch("/crm/sales-stages/<int:stage_id>", "Rename, recolour or flag a stage (admins)",
           body=schemas.StageChange, answers={200: schemas.SalesStage})
@require("settings", "write")
@require("crm", "write")
def update_stage(stage_id: int) -> Response:
    stage = services.access_stage(stage_id)
    body = parse(schemas.StageChange)
    return answer(schemas.SalesStage,
                  services.update_stage(me(), stage, body.model_dump(exclude_unset=True)))


@crm.delete("/crm/sales-stages/<int:stage_id>", "Delete a stage; its customers move to the "
            "first remaining one (admins)", answers={204: None}, errors=(409,))
@require("settings", "write")
@require("crm", "write")
def delete_stage(stage_id: int) -> Response:
    services.delete_stage(me(), services.access_stage(stage_id))
    return no_content()


# -- segments -------------------------------------------------------------------------------

@crm.get("/crm/segments", "Saved filters of customers", answers={200: Page[schemas.Segment]})
@require("crm", "read")
def list_segments() -> Response:
    return answer(Page[schemas.Segment], {"items": services.list_segments(), "next_cursor": None})


@crm.post("/crm/segments", "Save a filter of customers under a name", body=schemas.NewSegment,
          answers={201: schemas.Segment})
@require("crm", "write")
def create_segment() -> Response:
    body = parse(schemas.NewSegment)
    filters = body.filters.model_dump(exclude_unset=True) if body.filters else {}
    segment = services.create_segment(me(), body.name,
                                      services.parse_filters(filters, strict=True))
    return answer(schemas.Segment, segment, 201)


@crm.get("/crm/segments/<int:segment_id>/customers", "The customers a segment selects now",
         query=PageQuery, answers={200: Page[schemas.Customer]})
@require("crm", "read")
def segment_customers(segment_id: int) -> Response:
    segment = services.access_segment(segment_id)
    return _customer_page(services.segment_filters(segment), parse_query(PageQuery))
