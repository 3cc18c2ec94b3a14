"""The campaigns API's bodies, queries and answers (crm/api/kit.py).

The models check shapes and JSON types; the services check what the values mean — a segment
of this organization, a template the number has and WhatsApp approved, a text's variables,
a text on a number that needs a template — as they do for the pages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from crm.api.kit import (
    Answer,
    Body,
    Id,
    Moment,
    Page,
    PageQuery,
    Timestamp,
    between,
    computed,
    one_of,
)
from crm.campaigns import services
from crm.campaigns.audience import MAX_CUSTOMER_IDS
from crm.campaigns.models import COUNTS, RECIPIENT_STATES, STATUSES
from crm.campaigns.models import Campaign as CampaignRow
from crm.campaigns.models import CampaignRecipient as RecipientRow
from crm.campaigns.settings import MAX_DELAY

Seconds = between(1, MAX_DELAY)
LocalTime = Annotated[str, Field(json_schema_extra={"pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                                 examples=["22:00"])]
VARIABLES = "{name}, {first_name}, {company} and {custom.<key>} become each person's own."


# -- bodies ---------------------------------------------------------------------------------

class CampaignAudience(Body):
    """Who the campaign goes to: one segment, everyone with a tag, or chosen customers. The
    list is frozen (deduplicated by phone) when the campaign starts."""

    model_config = ConfigDict(json_schema_extra=one_of(
        (("segment_id",), ("segment_id",)), (("tag",), ("tag",)),
        (("customer_ids",), ("customer_ids",))))

    segment_id: Id = None
    tag: Annotated[str, Field(min_length=1, max_length=40)] = None
    customer_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_CUSTOMER_IDS)] = None


class TemplateChoice(Body):
    """One of the number's approved templates (GET /api/whatsapp/profiles/{id}/templates)."""

    name: Annotated[str, Field(min_length=1, max_length=512)]
    language: Annotated[str, Field(min_length=1, max_length=16)]
    parameters: list[Annotated[str, Field(max_length=1024)]] = Field([], max_length=100,
                                                                     description=(
        "One per {{n}} of the template's body, in order: fixed text or variables. "
        + VARIABLES))


class CampaignMessage(Body):
    """A text (web and sandbox numbers) or a template (cloud numbers: a business starts a
    conversation on the Cloud API only with a template WhatsApp approved)."""

    model_config = ConfigDict(json_schema_extra=one_of((("text",), ("text",)),
                                                       (("template",), ("template",))))

    text: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        None, description=VARIABLES)
    template: TemplateChoice = None


class CampaignFields(Body):
    """A campaign's fields; those left out keep (or take) their defaults."""

    name: Annotated[str, Field(min_length=1, max_length=120)] = None
    profile_id: Id = Field(None, description="The WhatsApp number it goes from.")
    audience: CampaignAudience = None
    message: CampaignMessage = None
    scheduled_at: Moment | None = Field(None, description=(
        "When to start (RFC 3339, with an offset, in the future); null: when started."))
    rate_per_minute: between(1, services.MAX_RATE_PER_MINUTE) | None = Field(None, description=(
        "At most this many messages a minute; null: as fast as the number may send."))
    delay_seconds: Annotated[list[Seconds], Field(min_length=2, max_length=2)] | None = Field(
        None, description="Web numbers: [min, max] seconds of random pause between messages; "
                          "null: the number's setting.")
    quiet_hours: Annotated[list[LocalTime], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[start, end] (\"22:00\", \"08:00\"), the organization's time: a "
                          "running campaign waits through them; null: none.")


class NewCampaign(CampaignFields):
    """A draft: a name and a number, and any of the other fields (all needed to start)."""

    name: Annotated[str, Field(min_length=1, max_length=120)]
    profile_id: Id = Field(description="The WhatsApp number it goes from.")


class CampaignChange(CampaignFields):
    """The fields a change sends (the others stay as they are); drafts only."""


# -- queries --------------------------------------------------------------------------------

class CampaignQuery(PageQuery):
    status: Literal[STATUSES] | None = Field(None, description="Only campaigns of this status.")


class ResultsQuery(PageQuery):
    state: Literal[(*RECIPIENT_STATES, "replied")] | None = Field(None, description=(
        "Only recipients in this state; `replied`: those who answered."))


# -- answers --------------------------------------------------------------------------------

class Campaign(Answer):
    id: int
    name: str
    profile_id: int
    status: Literal[STATUSES]
    audience: dict[str, Any] = Field(description=(
        "{\"segment_id\"}, {\"tag\"}, {\"customer_ids\"}, or {\"csv\": {\"filename\", "
        "\"rows\"}} for an uploaded list; {} until chosen."))
    message: dict[str, Any] = Field(description=(
        "{\"text\", \"media\"?} or {\"template\": {\"name\", \"language\", \"parameters\"}}; "
        "{} until written."))
    scheduled_at: Timestamp | None
    rate_per_minute: int | None
    delay_seconds: list[int] | None = computed("[min, max]; null: the number's setting.")
    quiet_hours: list[str] | None = computed("[start, end], \"HH:MM\"; null: none.")
    pause_reason: str | None = Field(description=(
        "Why it is paused: manual, failure_rate, module_off, or WhatsApp's error code."))
    pause_message: str | None = computed("Why it is paused, in the caller's language.")
    created_by_id: int | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    version: int = Field(ge=1, description="Counts the edits people made; the ETag.")
    edited_by_id: int | None
    edited_at: Timestamp | None

    @model_validator(mode="wrap")
    @classmethod
    def _shown(cls, campaign: CampaignRow, handler: Any) -> Campaign:
        shown = handler(campaign)
        if "csv" in campaign.audience:  # where the file is stored is the server's business
            spec = campaign.audience["csv"]
            shown.audience = {"csv": {"filename": spec.get("filename"), "rows": spec["rows"]}}
        if "media" in campaign.message:
            media = campaign.message["media"]
            shown.message = {**campaign.message, "media": {
                key: media.get(key) for key in ("kind", "mime_type", "size", "filename")}}
        if campaign.delay_min_seconds is not None:
            shown.delay_seconds = [campaign.delay_min_seconds, campaign.delay_max_seconds]
        if campaign.quiet_start is not None:
            shown.quiet_hours = [moment.strftime("%H:%M")
                                 for moment in (campaign.quiet_start, campaign.quiet_end)]
        if campaign.status == "paused":
            shown.pause_message = services.pause_reason_text(campaign)
        return shown


class Recipient(Answer):
    id: int
    phone: str | None = Field(description="E.164; null when the list had no valid number.")
    raw_phone: str | None = Field(description="The number as listed, when it was not valid.")
    customer_id: int | None
    state: Literal[RECIPIENT_STATES] = Field(description=(
        "queued → sending → sent → delivered → read; failed; skipped (never sent); unknown "
        "(the send was cut off: WhatsApp's status settles it, it is never sent again)."))
    reason_code: str | None = Field(validation_alias="error_code", description=(
        "Why it failed or was skipped: WhatsApp's error code, or opted_out, no_phone, "
        "invalid_phone, cancelled."))
    reason: str | None = computed("The same, in the caller's language.")
    attempts: int
    provider_message_id: str | None
    sent_at: Timestamp | None
    delivered_at: Timestamp | None
    read_at: Timestamp | None
    failed_at: Timestamp | None
    replied_at: Timestamp | None

    @model_validator(mode="wrap")
    @classmethod
    def _reason(cls, recipient: RecipientRow, handler: Any) -> Recipient:
        shown = handler(recipient)
        if recipient.error_code or recipient.error_reason:
            shown.reason = services.reason_text(recipient.error_code, recipient.error_reason)
        return shown


Counts = Annotated[dict[Literal[COUNTS], int], Field(description=(
    "total, queued (sending included), sent, delivered, read (a funnel: a read message "
    "counts as sent and delivered too), replied, failed, skipped, unknown."))]


class Results(Page[Recipient]):
    """A campaign's counts, and a page of its recipients in sending order."""

    counts: Counts


class MessageTemplate(Answer):
    """A template of a cloud number's business account, as the Graph API last listed it."""

    id: int
    name: str
    language: str
    category: str
    status: str = Field(description="Meta's: APPROVED, PENDING, REJECTED, PAUSED...; only "
                                    "APPROVED ones can be sent.")
    components: list[dict[str, Any]] = Field(description=(
        "Meta's header, body, footer and buttons; the body's {{n}} take the parameters."))
    synced_at: Timestamp


TemplatePage = Page[MessageTemplate]
