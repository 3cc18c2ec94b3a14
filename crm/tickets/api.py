"""Ticketing's JSON API: tickets, their comments and assignment, the SLA preview, and the SLA
settings (policies, business hours, holidays). Thin: every read and write is a service of
crm/tickets/services; bodies and answers are declared in crm/tickets/schemas.py.

Agents reach only the tickets assigned to them (404 for any other, as for another
organization's); managers and admins reach all. The SLA settings are the settings area's:
admins change them, managers read them.
"""

from __future__ import annotations

from flask import Response, request
from flask_babel import lazy_gettext

from crm.api.conditional import answer_stale_with, if_match, tagged
from crm.api.helpers import decode_cursor, encode_cursor
from crm.api.kit import (
    Page,
    PageQuery,
    answer,
    no_content,
    parse,
    parse_form,
    parse_query,
)
from crm.api.openapi import Endpoints
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.services import current_organization
from crm.permissions import require
from crm.tickets import schemas, services
from crm.tickets.models import Ticket
from crm.web import me

tickets = Endpoints("tickets", lazy_gettext("Tickets"))
answer_stale_with(Ticket, schemas.Ticket)

_COMMENT = ("A JSON body, or multipart/form-data with `body`, `public` and a `file` (images, "
            "PDF, office documents, text; 10 MB at most).")


# -- tickets --------------------------------------------------------------------------------

@tickets.get("/tickets", "List, filter and search tickets", query=schemas.TicketQuery,
             answers={200: Page[schemas.Ticket]})
@require("ticketing", "read")
def list_tickets() -> Response:
    query = parse_query(schemas.TicketQuery)
    filters = services.parse_filters(request.args, strict=True)
    rows, cursor = services.list_tickets(me(), filters, query.cursor or None, query.limit)
    return answer(Page[schemas.Ticket], {"items": rows, "next_cursor": cursor})


@tickets.post("/tickets", "Open a ticket", body=schemas.NewTicket,
              answers={201: schemas.Ticket})
@require("ticketing", "write")
def create_ticket() -> Response:
    body = parse(schemas.NewTicket)
    ticket = services.create_ticket(me(), body.model_dump(exclude_unset=True), source="api")
    return _ticket(ticket, 201)


@tickets.get("/tickets/<int:ticket_id>", "One ticket, with its SLA clocks",
             answers={200: schemas.Ticket}, etag=True)
@require("ticketing", "read")
def show_ticket(ticket_id: int) -> Response:
    ticket = services.access_ticket(ticket_id, me())
    return tagged(answer(schemas.Ticket, ticket), ticket)


@tickets.patch("/tickets/<int:ticket_id>", "Change a ticket (only the fields sent)",
               body=schemas.TicketChange, answers={200: schemas.Ticket}, errors=(409,),
               etag=True, description="A closed ticket cannot change (409).")
@require("ticketing", "write")
def update_ticket(ticket_id: int) -> Response:
    ticket = services.access_ticket(ticket_id, me())
    body = parse(schemas.TicketChange)
    services.update_ticket(me(), ticket, body.model_dump(exclude_unset=True),
                           expected_version=if_match())
    return _ticket(ticket)


@tickets.post("/tickets/<int:ticket_id>/assign", "Assign a ticket, or unassign it (null)",
              body=schemas.Assignment, answers={200: schemas.Ticket}, errors=(409,),
              etag=True)
@require("ticketing", "write")
def assign_ticket(ticket_id: int) -> Response:
    ticket = services.access_ticket(ticket_id, me())
    body = parse(schemas.Assignment)
    try:
        services.assign_ticket(me(), ticket, body.user_id, expected_version=if_match())
    except ValidationError as exc:  # the service names its own field
        raise ValidationError({"user_id": exc.fields.get("assignee_id", exc.message)}) from None
    return _ticket(ticket)


def _ticket(ticket: Ticket, status: int = 200) -> Response:
    """A ticket just written, as stored: the clocks the service set after its last flush
    move `updated_at` once more when flushed."""
    db.session.flush()
    return tagged(answer(schemas.Ticket, ticket, status), ticket)


# -- comments -------------------------------------------------------------------------------

@tickets.get("/tickets/<int:ticket_id>/comments", "The ticket's replies and notes, oldest "
             "first", query=PageQuery, answers={200: Page[schemas.Comment]})
@require("ticketing", "read")
def list_comments(ticket_id: int) -> Response:
    ticket = services.access_ticket(ticket_id, me())
    query = parse_query(PageQuery)
    rows = services.list_comments(ticket, decode_cursor(query.cursor), query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    return answer(Page[schemas.Comment],
                  {"items": rows, "next_cursor": encode_cursor(rows[-1].id if more else None)})


@tickets.post("/tickets/<int:ticket_id>/comments", "Reply publicly or add an internal note",
              body=schemas.NewComment, form=schemas.NewCommentWithFile,
              answers={201: schemas.Comment}, errors=(409,), description=_COMMENT)
@require("ticketing", "write")
def add_comment(ticket_id: int) -> Response:
    ticket = services.access_ticket(ticket_id, me())
    if request.mimetype == "multipart/form-data":
        form = parse_form(schemas.NewCommentWithFile)
        body, public, uploads = form.body, form.public, [form.file] if form.file else []
    else:
        comment = parse(schemas.NewComment)
        body, public, uploads = comment.body, comment.public, []
    comment = services.add_comment(me(), ticket, body, public, uploads)
    return answer(schemas.Comment, comment, 201)


# -- SLA ------------------------------------------------------------------------------------

@tickets.post("/tickets/sla-preview", "When a ticket opened at a moment would be due",
              body=schemas.SlaPreviewRequest, answers={200: schemas.SlaPreview},
              description="The same computation as real tickets' clocks, over the "
                          "organization's business calendar and policies.")
@require("ticketing", "write")
def sla_preview() -> Response:
    body = parse(schemas.SlaPreviewRequest)
    return answer(schemas.SlaPreview,
                  services.sla_preview(body.priority, body.opened_at, body.type_id))


@tickets.get("/tickets/sla-policies", "The SLA targets per priority (and type)",
             answers={200: schemas.Policies})
@require("settings", "read")
@require("ticketing", "read")
def list_policies() -> Response:
    return answer(schemas.Policies, {"policies": services.list_policies()})


@tickets.put("/tickets/sla-policies", "Replace the SLA targets (admins)",
             body=schemas.PolicyList, answers={200: schemas.Policies},
             description="Open tickets' clocks are computed again after the change.")
@require("settings", "write")
@require("ticketing", "write")
def set_policies() -> Response:
    body = parse(schemas.PolicyList)
    rows = [row.model_dump() for row in body.policies]
    return answer(schemas.Policies, {"policies": services.set_policies(me(), rows)})


@tickets.get("/tickets/business-hours", "The working hours the SLA clocks count",
             answers={200: schemas.BusinessHours})
@require("settings", "read")
@require("ticketing", "read")
def show_business_hours() -> Response:
    return _hours(services.business_hours())


@tickets.put("/tickets/business-hours", "Replace the working hours (admins)",
             body=schemas.HoursList, answers={200: schemas.BusinessHours},
             description="Open tickets' clocks are computed again after the change.")
@require("settings", "write")
@require("ticketing", "write")
def set_business_hours() -> Response:
    body = parse(schemas.HoursList)
    return _hours(services.set_business_hours(me(), [row.model_dump() for row in body.hours]))


def _hours(hours: dict[int, list[tuple[int, int]]]) -> Response:
    rows = [{"weekday": weekday, "start": schemas.clock_time(start),
             "end": schemas.clock_time(end)}
            for weekday in sorted(hours) for start, end in hours[weekday]]
    return answer(schemas.BusinessHours,
                  {"timezone": current_organization().timezone, "hours": rows})


@tickets.get("/tickets/holidays", "The days off the SLA clocks skip",
             query=schemas.HolidayQuery, answers={200: Page[schemas.Holiday]})
@require("settings", "read")
@require("ticketing", "read")
def list_holidays() -> Response:
    query = parse_query(schemas.HolidayQuery)
    return answer(Page[schemas.Holiday],
                  {"items": services.list_holidays(query.year), "next_cursor": None})


@tickets.post("/tickets/holidays", "Add a day off (admins)", body=schemas.NewHoliday,
              answers={201: schemas.Holiday}, errors=(409,))
@require("settings", "write")
@require("ticketing", "write")
def add_holiday() -> Response:
    body = parse(schemas.NewHoliday)
    return answer(schemas.Holiday, services.add_holiday(me(), body.model_dump()), 201)


@tickets.patch("/tickets/holidays/<int:holiday_id>", "Rename a day off (admins)",
               body=schemas.HolidayChange, answers={200: schemas.Holiday})
@require("settings", "write")
@require("ticketing", "write")
def rename_holiday(holiday_id: int) -> Response:
    holiday = services.access_holiday(holiday_id)
    body = parse(schemas.HolidayChange)
    return answer(schemas.Holiday, services.rename_holiday(me(), holiday, body.name))


@tickets.delete("/tickets/holidays/<int:holiday_id>", "Work on this day after all (admins)",
                answers={204: None})
@require("settings", "write")
@require("ticketing", "write")
def remove_holiday(holiday_id: int) -> Response:
    services.remove_holiday(me(), services.access_holiday(holiday_id))
    return no_content()
