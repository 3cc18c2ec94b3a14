"""Ticketing API's bodies, queries and answers (crm/api/kit.py).

The models check shapes and JSON types; the services check what the values mean (a type of
this organization, a member who works tickets, a customer who may have been merged), as they
do for the pages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from crm.api.kit import (
    Answer,
    Body,
    Id,
    Moment,
    PageQuery,
    Query,
    Timestamp,
    Upload,
    between,
    computed,
)
from crm.customers.services import MAX_TAGS
from crm.tickets.calendar import DAY_MINUTES
from crm.tickets.models import CLOCKS, PRIORITIES, SLA_STATES, SOURCES, STATUSES
from crm.tickets.models import Ticket as TicketRow
from crm.tickets.services import VIEWS, sla_summary
from crm.tickets.services.common import SUBJECT_LENGTH, TEXT_LENGTH
from crm.tickets.services.settings import MAX_TARGET_MINUTES

Tag = Annotated[str, Field(max_length=40)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
Subject = Annotated[str, Field(min_length=1, max_length=SUBJECT_LENGTH)]
Description = Annotated[str, Field(max_length=TEXT_LENGTH)]
Minutes = between(1, MAX_TARGET_MINUTES)
ClockTime = Annotated[str, Field(max_length=5, description=(
    "HH:MM in the organization's time zone; 24:00 ends a day at midnight."),
    json_schema_extra={"examples": ["09:00"]})]


# -- bodies ---------------------------------------------------------------------------------

class TicketFields(Body):
    """A ticket's fields; those left out keep (or take) their defaults."""

    subject: Subject = None
    description: Description = None
    type_id: Id | None = Field(None, description="A ticket type of the organization; the "
                                                 "Support type when left out.")
    priority: Literal[PRIORITIES] = None
    tags: Tags = None
    team_id: Id | None = Field(None, description="A team of the organization.")
    customer_id: Id | None = Field(None, description="A customer of the CRM.")


class NewTicket(TicketFields):
    """A ticket to open: a subject, unless it comes from a conversation (then the customer's
    last message gives subject and description, and the conversation its customer)."""

    conversation_id: Id | None = Field(None, description="A WhatsApp conversation.")
    assignee_id: Id | None = Field(None, description=(
        "A member who works tickets; an agent's own ticket is theirs when left out."))


class TicketChange(TicketFields):
    """The fields a change sends (the others stay as they are). Status moves the SLA
    clocks: pending and on_hold pause them, open resumes them, solved stops them."""

    status: Literal[STATUSES] = None


class NewComment(Body):
    body: Annotated[str, Field(max_length=TEXT_LENGTH)] = Field(
        "", description="Required unless a file is attached.")
    public: bool = Field(description=(
        "A public reply (sent on WhatsApp when the ticket has a conversation; it stops the "
        "first-response clock) or an internal note."))


class NewCommentWithFile(NewComment):
    """A comment with a file (multipart/form-data)."""

    file: Upload | None = None


class Assignment(Body):
    user_id: Id | None = Field(description="A member who works tickets; null unassigns.")


class SlaPreviewRequest(Body):
    priority: Literal[PRIORITIES]
    opened_at: Moment | None = Field(None, description="RFC 3339 with an offset; now when "
                                                       "left out.")
    type_id: Id | None = Field(None, description="A type with policies of its own.")


class PolicyRow(Body):
    """Targets in business minutes for a priority (and optionally one type only)."""

    priority: Literal[PRIORITIES]
    type_id: Id | None = None
    first_response_minutes: Minutes
    next_response_minutes: Minutes
    resolution_minutes: Minutes


class PolicyList(Body):
    policies: Annotated[list[PolicyRow], Field(max_length=4 * 50, description=(
        "Replaces every policy: one per priority without a type is required."))]


class HoursRow(Body):
    weekday: between(0, 6) = Field(description="0 Monday ... 6 Sunday.")
    start: ClockTime
    end: ClockTime


class HoursList(Body):
    hours: Annotated[list[HoursRow], Field(max_length=7 * 12, description=(
        "Replaces the working hours; a day may have several intervals that do not "
        "overlap; a day with none is a day off."))]


class NewHoliday(Body):
    day: Annotated[str, Field(max_length=10, json_schema_extra={"format": "date"})]
    name: Annotated[str, Field(min_length=1, max_length=120)]


class HolidayChange(Body):
    name: Annotated[str, Field(min_length=1, max_length=120)]


# -- queries --------------------------------------------------------------------------------

class TicketQuery(PageQuery):
    view: Literal[VIEWS] = Field("all", description=(
        "mine and unassigned list unsolved tickets unless a status is given; breaching: past "
        "an SLA warning, soonest due first; breached: a clock breached and still running."))
    status: Literal[STATUSES] | None = None
    priority: Literal[PRIORITIES] | None = None
    assignee_id: Id | None = None
    customer_id: Id | None = None
    team_id: Id | None = None
    type_id: Id | None = None
    conversation_id: Id | None = None
    tag: Tag | None = None
    search: Annotated[str, Field(max_length=100)] | None = Field(None, description=(
        "Subject or customer's name (Arabic letter variants ignored), or a number (#12)."))


class HolidayQuery(Query):
    year: between(2000, 2100) | None = None


# -- answers --------------------------------------------------------------------------------

class Sla(Answer):
    first_response_due_at: Timestamp | None = Field(description=(
        "When the first public reply is (or was) due; the clock stops at the ticket's "
        "`first_responded_at`."))
    next_response_due_at: Timestamp | None = Field(description=(
        "Runs from a customer's message after the first response to the next public reply."))
    resolution_due_at: Timestamp | None
    breached: list[Literal[CLOCKS]] = Field(description="The clocks that missed their target.")
    paused: bool = Field(description="The clocks stand still (pending, on hold).")
    status: Literal[SLA_STATES] | None = Field(description=(
        "What the lists show: breached, warning (75% of a target), ok, paused; null when no "
        "clock runs."))


class Ticket(Answer):
    id: int
    number: int = Field(description="Per organization: #1, #2, ...")
    subject: str
    description: str
    type_id: int | None
    priority: Literal[PRIORITIES]
    status: Literal[STATUSES]
    customer_id: int | None
    conversation_id: int | None
    assignee_id: int | None
    team_id: int | None
    tags: list[str]
    source: Literal[SOURCES]
    created_by_id: int | None
    created_at: Timestamp
    updated_at: Timestamp
    first_responded_at: Timestamp | None
    solved_at: Timestamp | None
    closed_at: Timestamp | None
    sla: Sla = computed("The SLA clocks in business time.")
    version: int = Field(ge=1, description="Counts the edits people made; the ETag.")
    edited_by_id: int | None = Field(description="Who made the last edit.")
    edited_at: Timestamp | None = Field(description="When the last edit was made.")

    @model_validator(mode="wrap")
    @classmethod
    def _clocks(cls, ticket: TicketRow | dict, handler: Any) -> Ticket:
        shown = handler(ticket)
        if isinstance(ticket, TicketRow):
            shown.sla = Sla.model_validate(sla_summary(ticket))
        return shown


class Attachment(Answer):
    id: int
    filename: str
    mime_type: str
    size: int


class Comment(Answer):
    id: int
    ticket_id: int
    author_id: int | None
    public: bool = Field(validation_alias="is_public")
    body: str
    message_id: int | None = Field(description="The WhatsApp message a public reply went "
                                               "out as.")
    attachments: list[Attachment]
    created_at: Timestamp


class SlaPreview(Answer):
    first_response_due_at: Timestamp
    resolution_due_at: Timestamp


class Policy(Answer):
    id: int
    priority: Literal[PRIORITIES]
    type_id: int | None
    first_response_minutes: int
    next_response_minutes: int
    resolution_minutes: int


class Policies(Answer):
    policies: list[Policy]


class Hours(Answer):
    weekday: int
    start: str
    end: str


class BusinessHours(Answer):
    timezone: str = Field(description="The organization's (its settings change it).")
    hours: list[Hours]


class Holiday(Answer):
    id: int
    day: str = Field(json_schema_extra={"format": "date"})
    name: str
    source: Literal["country", "custom"]

    @model_validator(mode="before")
    @classmethod
    def _iso_day(cls, holiday: Any) -> Any:
        if isinstance(holiday, dict):
            return holiday
        return {"id": holiday.id, "day": holiday.day.isoformat(), "name": holiday.name,
                "source": holiday.source}


def clock_time(minute: int) -> str:
    """"09:00" for 540; 1440 is "24:00"."""
    return f"{minute // 60:02d}:{minute % 60:02d}" if minute < DAY_MINUTES else "24:00"
