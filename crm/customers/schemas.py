"""The CRM API's bodies, queries and answers (crm/api/kit.py).

The models check shapes and JSON types (a JSON client sends 12 for an id, never "12"); the
services check what the values mean — a phone number in any written form, a stage of this
pipeline, a custom field's kind — as they do for the pages and the CSV import.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, computed_field, model_validator

from crm.api.kit import (
    INNER,
    Answer,
    Body,
    Id,
    Moment,
    PageQuery,
    Timestamp,
    between,
    computed,
)
from crm.customers.models import ACTIVITY_TYPES, SOURCES
from crm.customers.models import CustomerActivity as ActivityRow
from crm.customers.services import AMOUNT_LIMIT, MAX_TAGS, SCORE_LIMIT, SORTS, scoring, text_hidden
from crm.i18n import current_language

Tag = Annotated[str, Field(max_length=40)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
Score = between(-SCORE_LIMIT, SCORE_LIMIT)
Amount = Annotated[Decimal, Field(ge=0, le=AMOUNT_LIMIT, decimal_places=2, strict=False)]
Search = Annotated[str, Field(max_length=200, description=(
    "Name (Arabic letter variants ignored), phone in any written form, or email."))]


# -- bodies ---------------------------------------------------------------------------------

class CustomerFields(Body):
    """A customer's fields; those left out keep (or take) their defaults."""

    name: Annotated[str, Field(min_length=1, max_length=160)] = None
    phone: Annotated[str, Field(max_length=40)] | None = Field(None, description=(
        "Any written form (0501234567, +966 50 123 4567, ٠٥٠١٢٣٤٥٦٧); stored in E.164 with "
        "the organization's country."))
    email: Annotated[str, Field(max_length=254)] | None = Field(
        None, description="An email address; empty or null for none.")
    company: Annotated[str, Field(max_length=160)] = None
    owner_id: Id | None = Field(None, description="A user of the organization.")
    stage_id: Id | None = Field(None, description=(
        "A sales stage; changing it moves the customer on the board and logs an activity."))
    expected_value: Amount = Field(None, description=(
        "What the customer is expected to bring, in the organization's currency (a decimal "
        "string or number, at most two decimals)."))
    tags: Tags = None
    notes: Annotated[str, Field(max_length=10_000)] = None
    custom_fields: dict[str, Any] = Field(None, description=(
        "Custom field key to value (text, number, YYYY-MM-DD, or one of the choices); null "
        "or empty removes it."))


class NewCustomer(CustomerFields):
    """A customer to add: a name, and any of the other fields."""

    name: Annotated[str, Field(min_length=1, max_length=160)]


class CustomerChange(CustomerFields):
    """The fields a change sends (the others stay as they are), or changes to the tags."""

    add_tags: Tags = Field(None, description=(
        "Tags to add to those the customer has when the change is made (one already there "
        "is kept once); unlike `tags`, this never drops a tag someone else added meanwhile. "
        "Not with `tags`."))
    remove_tags: Tags = Field(None, description=(
        "Tags to take away from those the customer has when the change is made. Not with "
        "`tags`."))


class Merge(Body):
    duplicate_id: Id


class NewActivity(Body):
    type: Literal[ACTIVITY_TYPES]
    body: Annotated[str, Field(min_length=1, max_length=5000)]
    due_at: Moment | None = Field(None, description="RFC 3339, with an offset.")
    assignee_id: Id | None = None


class StageChange(Body):
    name_ar: Annotated[str, Field(min_length=1, max_length=80)] = None
    name_en: Annotated[str, Field(min_length=1, max_length=80)] = None
    color: str = Field(None, json_schema_extra={"pattern": "^#[0-9a-fA-F]{6}$"},
                       examples=["#0f7b6c"])
    is_won: bool = None
    is_lost: bool = None


class NewStage(StageChange):
    name_ar: Annotated[str, Field(min_length=1, max_length=80)]
    name_en: Annotated[str, Field(min_length=1, max_length=80)]


class Filters(Body):
    """A filter of the customer list, as its query parameters say it; a custom field filters
    as cf_<key>."""

    model_config = ConfigDict(extra="allow")

    search: Search = None
    stage_id: Id = None
    owner_id: Id = None
    tag: Tag = None
    source: Literal[SOURCES] = None
    score_min: Score = None
    score_max: Score = None


class NewSegment(Body):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    filters: Annotated[Filters | None, INNER] = None


# -- queries --------------------------------------------------------------------------------

class CustomerQuery(PageQuery):
    search: Search | None = None
    stage_id: Id | None = None
    owner_id: Id | None = None
    tag: Tag | None = None
    source: Literal[SOURCES] | None = None
    score_min: Score | None = None
    score_max: Score | None = None
    sort: Literal[SORTS] = "newest"


# -- answers --------------------------------------------------------------------------------

class Customer(Answer):
    id: int
    name: str
    phone: str | None
    email: str | None
    company: str
    owner_id: int | None
    stage_id: int | None
    expected_value: Decimal = Field(description="In the organization's currency.")
    tags: list[str]
    source: Literal[SOURCES]
    custom_fields: dict[str, Any]
    notes: str
    score: int
    score_breakdown: list[dict[str, Any]] = Field(exclude=True)
    last_contacted_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    version: int = Field(ge=1, description="Counts the edits people made; the ETag.")
    edited_by_id: int | None = Field(description=(
        "Who made the last edit (null before any, or for an edit of the system's)."))
    edited_at: Timestamp | None = Field(description="When the last edit was made.")

    score_explanation: list[str] = computed(
        "Why the score is what it is, one line per rule, in the caller's language.")

    @model_validator(mode="after")
    def _explain(self, info: ValidationInfo) -> Customer:
        """The customers of one answer share one explainer (kept in its context): a page
        looks the language up once and writes each distinct line once."""
        context = info.context if info.context is not None else {}
        if "explain_score" not in context:
            context["explain_score"] = scoring.explainer()
        self.score_explanation = context["explain_score"](self.score_breakdown)
        return self


class Activity(Answer):
    id: int
    customer_id: int
    type: str
    body: str = Field(description="Empty when there is none, or when `body_hidden`.")
    body_hidden: bool = computed(
        "A WhatsApp message of a conversation not assigned to the calling agent: its text "
        "is left out.")
    data: dict[str, Any]
    due_at: Timestamp | None
    assignee_id: int | None
    done_at: Timestamp | None
    actor_id: int | None
    created_at: Timestamp

    @model_validator(mode="wrap")
    @classmethod
    def _hide_unreadable(cls, activity: ActivityRow, handler: Any,
                         info: ValidationInfo) -> Activity:
        """A message not among the context's `readable` ones comes without its text."""
        shown = handler(activity)
        shown.body_hidden = text_hidden(activity, (info.context or {}).get("readable",
                                                                           frozenset()))
        if shown.body_hidden:
            shown.body = ""
        return shown


class SalesStage(Answer):
    id: int
    name_ar: str
    name_en: str
    position: int
    color: str
    is_won: bool
    is_lost: bool

    @computed_field(description="In the caller's language.")
    @property
    def name(self) -> str:
        return self.name_ar if current_language() == "ar" else self.name_en


class Segment(Answer):
    id: int
    name: str
    filters: dict[str, Any]
    created_at: Timestamp
