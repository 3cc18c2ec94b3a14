"""Campaigns: drafting, starting, pausing, resuming, cancelling; recipients and their counts.

Every function validates, writes, records who did it and tells the open pages; none commits
(the request, job or subscriber wrapper does). Pages and the API call these alike. The send
engine is crm/campaigns/jobs.py; audiences, rendering, templates, consent and the numbers'
settings have modules of their own beside this one.

Decisions the design left open, made here:
- A campaign is edited only as a draft (409 otherwise); it is versioned (crm/versions.py), so
  an edit made on a stale copy is refused when the caller says which version it read.
- Starting checks everything again (the template may have lost its approval since) and
  answers 409 when the campaign has already started: a second start does nothing.
- The recipients are frozen by the runner's first run, not in the request that starts the
  campaign: a large audience never holds a request.
- Pausing and cancelling return only once no message of the campaign is on its way (at most
  IN_FLIGHT_WAIT): after they return, nothing more leaves.
- Cancelling marks what was still queued `skipped` (reason "cancelled"); what was sent stays.
- A reply within REPLY_WINDOW of a campaign message counts once, for the latest campaign
  message to that person.
"""

from __future__ import annotations

import logging
import mimetypes
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from datetime import time as time_of_day
from typing import Any

from flask import g
from flask_babel import gettext as _
from sqlalchemy import exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import joinedload

from crm.billing import gate
from crm.campaigns import audience, jobs, live
from crm.campaigns.models import (
    COUNTED_IN,
    COUNTS,
    RECIPIENT_STATES,
    STATE_RANK,
    Campaign,
    CampaignRecipient,
    CampaignResult,
)
from crm.campaigns.rendering import (
    Outbound,
    check_variables,
    empty_variables,
    outbound,
    placeholder_count,
    template_body,
    variables_of,
)
from crm.campaigns.settings import check_delay
from crm.campaigns.templates import APPROVED, find_template
from crm.customers import services as customers
from crm.errors import ConflictError, NotFoundError, ValidationError, file_too_large
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit, enabled_modules
from crm.models import utcnow
from crm.pagination import keyset_page
from crm.search import fold_text
from crm.tenancy import current_organization_id, get_in_organization
from crm.text import has_control_characters
from crm.transaction import on_commit
from crm.validation import collect
from crm.versions import Expected, check_version, lock_for_edit, record_edit
from crm.whatsapp import media
from crm.whatsapp.models import Message, WhatsAppProfile
from crm.whatsapp.profiles import access_profile

log = logging.getLogger("crm.campaigns")

MAX_RATE_PER_MINUTE = 60_000
IN_FLIGHT_WAIT = 5.0  # seconds pause and cancel wait for the sends already on their way
REPLY_WINDOW = timedelta(days=3)
FAILURE_WINDOW = 50  # the last sends looked at...
FAILURE_LIMIT = 10  # ...of which more than this many failed (20%) pause the campaign
EDITABLE = ("name", "profile_id", "audience", "message", "scheduled_at", "rate_per_minute",
            "delay_seconds", "quiet_hours")


def _not_found() -> NotFoundError:
    return NotFoundError(_("Not found."))


# -- access and lists ------------------------------------------------------------------------

def access_campaign(campaign_id: int) -> Campaign:
    campaign = get_in_organization(Campaign, campaign_id)
    if campaign is None:
        raise _not_found()
    return campaign


def list_campaigns(status: str | None = None, after_id: int | None = None, limit: int = 50,
                   search: str = "") -> tuple[list[Campaign], int | None]:
    """Campaigns newest first, keyset-paginated on id, with their numbers; only those of
    `status`, and whose name holds `search` (Arabic letter variants folded), if given.

    The name is folded at query time, without an index: an organization writes its campaigns
    by hand, so it has hundreds at most, all read through ix_campaigns_recent anyway."""
    query = select(Campaign).order_by(Campaign.id.desc()).options(joinedload(Campaign.profile))
    if status is not None:
        query = query.where(Campaign.status == status)
    if search.strip():
        query = query.where(func.wasl_fold(Campaign.name).contains(
            fold_text(" ".join(search.split())), autoescape=True))
    if after_id is not None:
        query = query.where(Campaign.id < after_id)
    return keyset_page(query, limit, lambda last: last.id)


# -- drafting --------------------------------------------------------------------------------

def create_campaign(actor: User, data: Mapping) -> Campaign:
    """A draft: `name` and `profile_id` (a WhatsApp number) required; `audience`, `message`,
    `scheduled_at`, `rate_per_minute`, `delay_seconds` ([min, max], web numbers) and
    `quiet_hours` (["HH:MM", "HH:MM"], the organization's time) may come now or later."""
    values = _checked(data, None, required=("name", "profile_id"))
    campaign = Campaign(created_by_id=actor.id)
    _apply(campaign, values)
    db.session.add(campaign)
    db.session.flush()
    audit("campaign.created", actor, campaign, name=campaign.name)
    return campaign


def update_campaign(actor: User, campaign: Campaign, data: Mapping,
                    expected_version: Expected = None) -> Campaign:
    """Change what `data` names (EDITABLE), only while the campaign is a draft."""
    lock_for_edit(campaign)
    _ensure_draft(campaign)
    values = _checked(data, campaign)
    check_version(campaign, expected_version)
    _apply(campaign, values)
    record_edit(campaign, actor)
    audit("campaign.updated", actor, campaign, fields=sorted(values))
    return campaign


def delete_campaign(actor: User, campaign: Campaign) -> None:
    """Remove a draft (and its uploaded files)."""
    lock_for_edit(campaign)
    _ensure_draft(campaign)
    audit("campaign.deleted", actor, campaign, name=campaign.name)
    files = [audience.csv_path(campaign.audience["csv"])] if "csv" in campaign.audience else []
    db.session.delete(campaign)
    db.session.flush()
    on_commit(lambda: [path.unlink(missing_ok=True) for path in files])


def _ensure_draft(campaign: Campaign) -> None:
    if campaign.status != "draft":
        raise ConflictError(_("Only a draft campaign can be changed."))


def _checked(data: Mapping, campaign: Campaign | None, required: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    """The values `data` gives, checked; the message against the number it will go from."""
    if not isinstance(data, Mapping):
        raise ValidationError({"name": _("Please correct the highlighted fields.")})
    checks = {
        "name": lambda: customers.check_text(data.get("name"), "name", 120, required=True),
        "profile_id": lambda: _check_profile(data.get("profile_id")),
        "audience": lambda: audience.check_audience(data.get("audience")),
        "scheduled_at": lambda: _check_schedule(data.get("scheduled_at")),
        "rate_per_minute": lambda: None if data.get("rate_per_minute") in (None, "") else
        customers.check_int(data.get("rate_per_minute"), "rate_per_minute", 1,
                            MAX_RATE_PER_MINUTE),
        "delay_seconds": lambda: None if data.get("delay_seconds") in (None, "") else
        check_delay(data.get("delay_seconds"), "delay_seconds"),
        "quiet_hours": lambda: _check_quiet_hours(data.get("quiet_hours")),
    }
    given = [name for name in checks if name in data or name in required]
    values = collect({name: checks[name] for name in given})
    profile = values.get("profile_id") or (campaign.profile if campaign else None)
    message = data.get("message") if "message" in data else (
        campaign.message if campaign and "profile_id" in values else None)
    if message:
        values["message"] = check_message(message, profile, campaign)
    elif "message" in data:
        values["message"] = {}  # cleared (a page does so when the number changes kind)
    return values


def _apply(campaign: Campaign, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if name == "profile_id":
            campaign.profile = value
        elif name == "delay_seconds":
            campaign.delay_min_seconds, campaign.delay_max_seconds = value or (None, None)
        elif name == "quiet_hours":
            campaign.quiet_start, campaign.quiet_end = value or (None, None)
        else:
            setattr(campaign, name, value)


def _check_profile(raw: object) -> WhatsAppProfile:
    try:
        return access_profile(customers.check_id(raw, "profile_id") or 0)
    except NotFoundError:
        raise ValidationError({"profile_id": _("Choose one of your WhatsApp numbers.")}) from None


def _check_schedule(raw: object) -> datetime | None:
    moment = customers.check_datetime(raw, "scheduled_at")
    if moment is not None and moment <= utcnow():
        raise ValidationError({"scheduled_at": _("Choose a time in the future.")})
    return moment


def _check_quiet_hours(raw: object) -> tuple[time_of_day, time_of_day] | None:
    """["HH:MM", "HH:MM"] (start, end; the end may be past midnight), or None for none."""
    if raw in (None, "", []):
        return None
    try:
        start, end = (time_of_day.fromisoformat(value) for value in raw)
    except (TypeError, ValueError):
        start = end = None
    if start is None or start == end:
        raise ValidationError({"quiet_hours": _("Give two different times, such as 22:00 "
                                                "and 08:00.")})
    return start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)


def check_message(raw: object, profile: WhatsAppProfile | None,
                  campaign: Campaign | None = None) -> dict[str, Any]:
    """A text (web and sandbox numbers; its media kept) or one of the cloud number's approved
    templates with one parameter per {{n}} of its body; variables checked either way."""
    if not isinstance(raw, Mapping) or (("text" in raw) == ("template" in raw)):
        raise ValidationError({"message": _("Write a text or choose a template.")})
    if profile is None:
        raise ValidationError({"profile_id": _("Choose one of your WhatsApp numbers.")})
    custom_keys = {definition.key for definition in customers.list_field_definitions()}
    if "text" in raw:
        if profile.provider == "cloud":
            raise ValidationError({"message": _(
                "A template is needed: a WhatsApp Cloud API number starts conversations only "
                "with a template WhatsApp approved.")})
        text = customers.check_text(raw["text"], "message", 4096, required=True,
                                    single_line=False)
        check_variables(text, "message", custom_keys)
        media = (campaign.message.get("media") if campaign else None)
        return {"text": text, **({"media": media} if media else {})}
    if profile.provider != "cloud":
        raise ValidationError({"message": _("Only WhatsApp Cloud API numbers send templates: "
                                            "write a text.")})
    return {"template": _check_template(raw["template"], profile, custom_keys)}


def _check_template(raw: object, profile: WhatsAppProfile, custom_keys: set[str]
                    ) -> dict[str, Any]:
    raw = raw if isinstance(raw, Mapping) else {}
    name, language = raw.get("name"), raw.get("language")
    template = (find_template(profile.id, name, language)
                if isinstance(name, str) and isinstance(language, str) else None)
    if template is None or template.status != APPROVED:
        raise ValidationError({"template": _("Choose one of the number's approved templates.")})
    parameters = raw.get("parameters", [])
    if not isinstance(parameters, list | tuple) or not all(
            isinstance(p, str) and len(p) <= 1024 for p in parameters):
        raise ValidationError({"template": _("Parameters must be a list of texts.")})
    wanted = placeholder_count(template_body(template.components))
    if len(parameters) != wanted:
        raise ValidationError({"template": _("This template takes %(n)d parameters.",
                                             n=wanted)})
    for parameter in parameters:
        if has_control_characters(parameter):  # a NUL, which JSONB cannot store, among them
            raise ValidationError({"template": _("Remove the control characters.")})
        check_variables(parameter, "template", custom_keys)
    return {"name": name, "language": language, "parameters": list(parameters)}


def upload_audience(actor: User, campaign: Campaign, upload: Any) -> Campaign:
    """Make an uploaded CSV file of phone numbers the draft's audience."""
    lock_for_edit(campaign)
    _ensure_draft(campaign)
    previous = campaign.audience.get("csv")
    campaign.audience = audience.store_csv(upload)
    record_edit(campaign, actor)
    audit("campaign.updated", actor, campaign, fields=["audience"],
          rows=campaign.audience["csv"]["rows"])
    if previous:
        old = audience.csv_path(previous)
        on_commit(lambda: old.unlink(missing_ok=True))
    return campaign


def attach_media(actor: User, campaign: Campaign, upload: Any | None) -> Campaign:
    """Send a file with the draft's text (web and sandbox numbers); None removes it."""
    lock_for_edit(campaign)
    _ensure_draft(campaign)
    if "text" not in campaign.message:
        raise ValidationError({"file": _("Write the message's text first.")})
    message = {key: value for key, value in campaign.message.items() if key != "media"}
    if upload is not None:
        mime_type = (getattr(upload, "mimetype", "") or "").split(";")[0].strip()
        kind = media.kind_of(mime_type)
        if kind is None:
            raise ValidationError({"file": _("This type of file cannot be sent on WhatsApp.")})
        data = upload.read(media.MAX_UPLOAD_BYTES + 1)
        if len(data) > media.ALLOWED_UPLOADS[kind][1]:
            raise file_too_large(media.ALLOWED_UPLOADS[kind][1])
        if not data:
            raise ValidationError({"file": _("The file is empty.")})
        message["media"] = {"kind": kind, "mime_type": mime_type, "size": len(data),
                            "filename": customers.check_text(upload.filename or "", "file",
                                                             200) or kind,
                            "path": _store_media(campaign, data, mime_type)}
    campaign.message = message
    record_edit(campaign, actor)
    audit("campaign.updated", actor, campaign, fields=["media"])
    return campaign


def _store_media(campaign: Campaign, data: bytes, mime_type: str) -> str:
    """Write a campaign's file under the organization's media folder; its relative path (every
    message of the campaign names the same file)."""

    extension = mimetypes.guess_extension(mime_type) or ".bin"
    relative = (f"{campaign.organization_id}/campaigns/"
                f"{campaign.id}-{uuid.uuid4().hex}{extension}")
    target = media.root() / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return relative


# -- preview ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preview:
    """A message as one recipient's phone shows it."""

    type: str  # text, template, or the media kind
    text: str
    template: dict | None = None  # name, language and the parameters as sent
    media: dict | None = None
    recipient: audience.Candidate | None = None  # whom it is shown for (None: nobody yet)
    empty: tuple[str, ...] = ()  # the variables it uses that are empty for them


def preview_message(campaign: Campaign, customer_id: int | None = None,
                    row: int | None = None,
                    recipient: audience.Candidate | None = None) -> Preview:
    """The campaign's message for one customer (`customer_id`), one row of its audience's
    file (`row`), one of `audience.candidates` already found (`recipient`: a file is not
    read again), else the audience's first person."""
    if not campaign.message:
        raise ValidationError({"message": _("Write a text or choose a template.")})
    recipient = recipient or _preview_recipient(campaign, customer_id, row)
    if recipient is None:  # no audience yet: nobody's values to miss
        return _preview(campaign, render_for(campaign, variables_of("", "", {})))
    return replace(_preview(campaign, render_for(campaign, recipient.variables)),
                   recipient=recipient,
                   empty=tuple(empty_variables(campaign.message, recipient.variables)))


def _preview_recipient(campaign: Campaign, customer_id: int | None,
                       row: int | None) -> audience.Candidate | None:
    if customer_id is not None:
        customer = customers.resolve_customer(customer_id)
        if customer is None:
            raise ValidationError({"customer_id": _("Choose one of your customers.")})
        return audience.customer_candidate(customer)
    if row is not None:
        found = audience.file_candidate(campaign.audience, row)
        if found is None:
            raise ValidationError({"row": _("Choose one of the file's rows.")})
        return found
    first = audience.candidates(campaign.audience, 1)
    return first[0] if first else None


def render_for(campaign: Campaign, variables: Mapping[str, Any]) -> Outbound:
    """The campaign's message for one person's variables."""
    template = campaign.message.get("template")
    components = None
    if template:
        row = find_template(campaign.profile_id, template["name"], template["language"])
        components = row.components if row else []
    return outbound(campaign.message, variables, components)


def _preview(campaign: Campaign, message: Outbound) -> Preview:
    if message.type == "template":
        parameters = [p["text"] for component in message.content.get("components", [])
                      for p in component.get("parameters", [])]
        return Preview("template", message.body, {
            "name": message.content["name"], "language": message.content["language"],
            "parameters": parameters})
    if message.type != "text":
        return Preview(message.type, message.body, media={
            key: message.content.get(key) for key in ("mime_type", "filename", "size")})
    return Preview("text", message.body)


# -- starting, pausing, resuming, cancelling --------------------------------------------------

def start_campaign(actor: User, campaign: Campaign) -> Campaign:
    """Start a draft now, or at its `scheduled_at`. 409 if it has started already (nothing
    happens twice); every part is checked again first."""
    lock_for_edit(campaign)
    if campaign.status in ("scheduled", "running"):
        raise ConflictError(_("This campaign has already started."))
    if campaign.status != "draft":
        raise ConflictError(_("Only a draft campaign can be started."))
    _check_ready(campaign)
    db.session.execute(insert(CampaignResult).values(organization_id=campaign.organization_id,
                                                     campaign_id=campaign.id)
                       .on_conflict_do_nothing())
    if campaign.scheduled_at is not None and campaign.scheduled_at > utcnow():
        campaign.status = "scheduled"
        jobs.schedule_start(campaign)
        audit("campaign.scheduled", actor, campaign, at=campaign.scheduled_at.isoformat())
    else:
        ensure_room()
        run(campaign)
        audit("campaign.started", actor, campaign, audience=audience.describe(campaign.audience))
    live.status_changed(campaign)
    return campaign


def start_scheduled_now(actor: User, campaign: Campaign) -> Campaign:
    """Send a scheduled campaign now rather than at its time (409 unless scheduled): its
    scheduled start then finds it running and does nothing."""
    lock_for_edit(campaign)
    if campaign.status != "scheduled":
        raise ConflictError(_("Only a scheduled campaign can be sent now."))
    ensure_room()
    run(campaign)
    audit("campaign.started", actor, campaign, audience=audience.describe(campaign.audience),
          early=True)
    live.status_changed(campaign)
    return campaign


def _check_ready(campaign: Campaign) -> None:
    """Everything a start needs, checked now: a usable number, an audience, a message."""
    profile = campaign.profile
    errors: dict[str, str] = {}
    if profile.is_deleted or profile.state != "connected":
        errors["profile_id"] = _("Connect this WhatsApp number first.")
    if not campaign.audience:
        errors["audience"] = _("Choose a segment, a tag or customers.")
    elif "csv" not in campaign.audience:
        try:
            audience.check_audience(campaign.audience)
        except ValidationError as exc:
            errors.update(exc.fields)
    try:
        check_message(campaign.message, profile, campaign)
    except ValidationError as exc:
        errors.update(exc.fields)
    if errors:
        raise ValidationError(errors)
    if audience.count(campaign.audience) == 0:
        raise ValidationError({"audience": _("This audience has nobody in it.")})


def ensure_room() -> None:
    """Refuse (PlanLimitError: 402 plan_limit) to send when the plan's campaign messages of
    the month are used up: the campaign would only pause at once."""
    gate.ensure_within("campaign_messages_per_month")


def run(campaign: Campaign) -> None:
    """Set the campaign running and have a runner take it (after commit)."""
    campaign.status = "running"
    campaign.started_at = campaign.started_at or utcnow()
    campaign.pause_reason = campaign.pause_detail = None
    jobs.hand_over(campaign)


def pause_campaign(actor: User, campaign: Campaign) -> Campaign:
    """Stop sending: nothing new leaves once this returns (a send already on its way is
    waited for); resuming continues with whoever is left."""
    lock_for_edit(campaign)
    if campaign.status not in ("running", "scheduled"):
        raise ConflictError(_("Only a running or scheduled campaign can be paused."))
    _pause(campaign, "manual", None)
    audit("campaign.paused", actor, campaign, reason="manual")
    _await_in_flight(campaign)
    return campaign


def pause_by_itself(campaign_id: int, reason: str, detail: str | None) -> bool:
    """The send engine pauses a running campaign and tells the admins why (`reason`: a Graph
    error code, "failure_rate", "module_off", "read_only", "plan_limit"). False if it was
    not running."""
    campaign = db.session.scalar(select(Campaign).where(Campaign.id == campaign_id)
                                 .with_for_update().execution_options(populate_existing=True))
    if campaign is None or campaign.status != "running":
        return False
    _pause(campaign, reason, detail)
    audit("campaign.paused", None, campaign, reason=reason, detail=detail)
    log.warning("campaign %s paused itself: %s (%s)", campaign.id, reason, detail)
    return True


def _pause(campaign: Campaign, reason: str, detail: str | None) -> None:
    campaign.status = "paused"
    campaign.pause_reason, campaign.pause_detail = reason, (detail or "")[:500] or None
    live.status_changed(campaign, campaign_results(campaign))


def resume_campaign(actor: User, campaign: Campaign) -> Campaign:
    """Continue a paused campaign where it stopped (or wait again for its time, if it never
    started and that time is still to come)."""
    lock_for_edit(campaign)
    if campaign.status != "paused":
        raise ConflictError(_("Only a paused campaign can be resumed."))
    if campaign.paused_before_its_time:
        campaign.status, campaign.pause_reason, campaign.pause_detail = "scheduled", None, None
        jobs.schedule_start(campaign)
    else:
        ensure_room()
        run(campaign)
    audit("campaign.resumed", actor, campaign)
    live.status_changed(campaign)
    return campaign


def cancel_campaign(actor: User, campaign: Campaign) -> Campaign:
    """Stop for good: what was sent stays sent, what was still queued is skipped."""
    lock_for_edit(campaign)
    if campaign.status not in ("scheduled", "running", "paused"):
        raise ConflictError(_("Only a scheduled, running or paused campaign can be cancelled."))
    campaign.status, campaign.finished_at = "cancelled", utcnow()
    dropped = db.session.execute(
        update(CampaignRecipient)
        .where(CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.state == "queued")
        .values(state="skipped", error_code="cancelled", claimed_until=None)
        .execution_options(synchronize_session=False)).rowcount
    add_counts(campaign.id, {"queued": -dropped, "skipped": dropped})
    audit("campaign.cancelled", actor, campaign, skipped=dropped)
    live.status_changed(campaign, campaign_results(campaign))
    _await_in_flight(campaign)
    return campaign


def complete(campaign: Campaign) -> None:
    """Nothing is left to send: the campaign is completed (the runner calls this)."""
    campaign.status, campaign.finished_at = "completed", utcnow()
    results = campaign_results(campaign)
    log.info("campaign %s completed: %s", campaign.id, results)
    live.completed(campaign, results)


def _await_in_flight(campaign: Campaign) -> None:
    """Once committed, wait until no message of the campaign is being sent (the runner
    checks the status under a share lock before each send, so none starts after the
    commit)."""
    campaign_id = campaign.id

    def wait() -> None:
        deadline = time.monotonic() + IN_FLIGHT_WAIT
        while time.monotonic() < deadline and db.session.scalar(select(exists().where(
                CampaignRecipient.campaign_id == campaign_id,
                CampaignRecipient.state == "sending",
                CampaignRecipient.claimed_until > func.clock_timestamp()))):
            db.session.rollback()  # a new snapshot for the next look
            time.sleep(0.05)

    on_commit(wait)


# -- recipients and counts -----------------------------------------------------------------

def campaign_results(campaign: Campaign) -> dict[str, int]:
    """The counts the page shows: total, queued, sent, delivered, read, replied, failed,
    skipped (and unknown: cut off, waiting for WhatsApp's word)."""
    row = db.session.scalar(select(CampaignResult).where(
        CampaignResult.campaign_id == campaign.id).execution_options(populate_existing=True))
    return row.as_dict() if row else dict.fromkeys(COUNTS, 0)


_GATHERED = "campaign_counts"


@contextmanager
def counts_together() -> Iterator[None]:
    """Gather the count moves made inside the block into one UPDATE per campaign at its end
    (a runner's batch moves many recipients)."""
    gathered: dict[int, Counter[str]] = db.session.info.setdefault(_GATHERED, {})
    try:
        yield
    finally:
        db.session.info.pop(_GATHERED, None)
    for campaign_id, deltas in gathered.items():
        add_counts(campaign_id, deltas)


def add_counts(campaign_id: int, deltas: Mapping[str, int]) -> None:
    """Move the campaign's counts by `deltas` in the database (concurrent paths both count),
    or, inside `counts_together()`, at the end of its block."""
    gathered = db.session.info.get(_GATHERED)
    if gathered is not None:
        gathered.setdefault(campaign_id, Counter()).update(deltas)
        return
    changes = {name: getattr(CampaignResult, name) + delta
               for name, delta in deltas.items() if delta}
    if changes:
        db.session.execute(update(CampaignResult)
                           .where(CampaignResult.campaign_id == campaign_id)
                           .values(changes).execution_options(synchronize_session=False))


def _count_move(campaign_id: int, old: str, new: str) -> None:
    deltas: dict[str, int] = {}
    for name in COUNTED_IN[old]:
        deltas[name] = deltas.get(name, 0) - 1
    for name in COUNTED_IN[new]:
        deltas[name] = deltas.get(name, 0) + 1
    add_counts(campaign_id, deltas)


def moves_forward(old: str, new: str) -> bool:
    """Is `new` a step forward from `old` (sending may turn out `unknown`, same rank)?"""
    return STATE_RANK[new] > STATE_RANK[old] or (old == "sending" and new == "unknown")


def advance(recipient: CampaignRecipient, state: str, campaign_name: str | None = None,
            **fields: Any) -> bool:
    """Move a recipient forward to `state` (never back: a late "delivered" after "read"
    changes nothing), with its counts; False when it was not a step forward. Stamps in
    `fields` are kept when already set. Reaching `sent` logs `campaign_sent` on the customer's
    timeline (the campaign's name as its text)."""
    old = recipient.state
    if not moves_forward(old, state):
        return False
    for name, value in fields.items():
        if getattr(recipient, name) is None or name in ("error_code", "error_reason"):
            setattr(recipient, name, value)
    recipient.state = state
    if state != "sending":
        recipient.claimed_until = None
    _count_move(recipient.campaign_id, old, state)
    if state in ("sent", "delivered", "read") and old in ("queued", "sending", "unknown"):
        _log_on_timeline(recipient, "campaign_sent", campaign_name)
    return True


def requeue(recipient: CampaignRecipient, at: datetime | None) -> None:
    """Put a recipient whose message WhatsApp refused for a moment back in the queue."""
    _count_move(recipient.campaign_id, recipient.state, "queued")
    recipient.state, recipient.message_id = "queued", None
    recipient.next_attempt_at, recipient.claimed_until = at, None


def _log_on_timeline(recipient: CampaignRecipient, kind: str, body: str | None) -> None:
    if recipient.customer_id is None or not _crm_on():
        return
    customer = customers.resolve_customer(recipient.customer_id)
    if customer is None:
        return
    if body is None:
        body = db.session.scalar(select(Campaign.name).where(
            Campaign.id == recipient.campaign_id)) or ""
    customers.log_automatic(customer, kind, body, {
        "campaign_id": recipient.campaign_id, "recipient_id": recipient.id,
        "message_id": recipient.message_id}, source_key=f"{kind}:{recipient.id}")


def _crm_on() -> bool:
    """Is the CRM on for the current organization? Asked once per request or job and
    organization (a job may act for several)."""
    known = g.setdefault("campaigns_crm_on", {})
    org_id = current_organization_id()
    if org_id not in known:
        known[org_id] = "crm" in enabled_modules()
    return known[org_id]


def list_recipients(campaign: Campaign, state: str | None = None, after_id: int | None = None,
                    limit: int = 50) -> tuple[list[CampaignRecipient], int | None]:
    """A campaign's recipients in sending order, keyset-paginated on id; only those of `state`
    (or "replied"), if given."""
    if state is not None and state not in (*RECIPIENT_STATES, "replied"):
        raise ValidationError({"state": _("Choose one of the listed options.")})
    query = (select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign.id)
             .order_by(CampaignRecipient.id))
    if state == "replied":
        query = query.where(CampaignRecipient.replied_at.is_not(None))
    elif state is not None:
        query = query.where(CampaignRecipient.state == state)
    if after_id is not None:
        query = query.where(CampaignRecipient.id > after_id)
    return keyset_page(query, limit, lambda last: last.id)


def recent_sends(phone: str, limit: int) -> list[tuple[CampaignRecipient, Campaign]]:
    """The campaign messages last sent to `phone`, newest first, each with its campaign
    (through ix_campaign_recipients_phone)."""
    return list(db.session.execute(
        select(CampaignRecipient, Campaign)
        .join(Campaign, Campaign.id == CampaignRecipient.campaign_id)
        .where(CampaignRecipient.phone == phone, CampaignRecipient.sent_at.is_not(None))
        .order_by(CampaignRecipient.sent_at.desc()).limit(limit)).tuples())


def failure_reasons(campaign: Campaign) -> list[tuple[str, str | None, int]]:
    """Failed and skipped recipients grouped by state and reason code, most first."""
    return [tuple(row) for row in db.session.execute(
        select(CampaignRecipient.state, CampaignRecipient.error_code, func.count())
        .where(CampaignRecipient.campaign_id == campaign.id,
               CampaignRecipient.state.in_(("failed", "skipped")))
        .group_by(CampaignRecipient.state, CampaignRecipient.error_code)
        .order_by(func.count().desc()))]


def reason_text(code: str | None, detail: str | None = None) -> str:
    """Why a recipient failed or was skipped, in the reader's language."""
    texts = {
        "opted_out": _("Opted out of campaigns"),
        "no_phone": _("No phone number"),
        "invalid_phone": _("Not a valid phone number"),
        "cancelled": _("The campaign was cancelled"),
        "131026": _("Undeliverable: not on WhatsApp, or cannot receive this message"),
        "131047": _("More than 24 hours since the customer last wrote"),
        "131049": _("WhatsApp chose not to deliver it, to keep engagement healthy"),
        "131056": _("Too many messages to this person in a short time"),
    }
    if code in texts:
        return texts[code]
    if code and code.startswith("132"):
        return _("WhatsApp refused the template: %(reason)s", reason=detail or code)
    return detail or code or ""


def pause_reason_text(campaign: Campaign) -> str:
    """Why a campaign is paused, in the reader's language."""
    texts = {
        "manual": _("Paused by a person."),
        "failure_rate": _("More than one in five of its last 50 messages failed."),
        "module_off": _("The campaigns module was switched off."),
        "read_only": _("Your organization is read-only until its overdue payment is made."),
        "131048": _("WhatsApp limits this number for spam (131048): check its quality rating "
                    "in WhatsApp Manager before resuming."),
        "368": _("WhatsApp blocked this number for a while for policy violations (368)."),
        "131031": _("The WhatsApp Business Account is locked (131031)."),
        "190": _("The number's access token is no longer valid (190): update it in the "
                 "number's settings."),
        "not_connected": _("The linked device is not connected: pair it again, then resume."),
        "not_configured": _("This number is not set up to send: check its settings."),
    }
    reason = campaign.pause_reason or ""
    if reason == "plan_limit":
        used, _slash, allowed = (campaign.pause_detail or "").partition("/")
        return _("Your plan's campaign messages for this month are used up (%(used)s of "
                 "%(allowed)s): upgrade the plan to send the rest.", used=used,
                 allowed=allowed)
    return texts.get(reason) or _("WhatsApp refused the sends: %(reason)s",
                                  reason=campaign.pause_detail or reason)


# -- what statuses and replies do ------------------------------------------------------------

# The message's status → the recipient's state it brings.
_STATE_OF = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed",
             "unknown": "unknown"}
_STAMP = {"sent": "sent_at", "delivered": "delivered_at", "read": "read_at",
          "failed": "failed_at"}


# Outbox messages whose recipients a runner of this process is settling with its batch
# (crm/campaigns/jobs.py): the events their sends publish have nothing to do here.
SETTLED_BY_RUNNER: set[int] = set()


def follow_message(message_id: int, status: str | None = None) -> CampaignRecipient | None:
    """Bring the recipient of an outbox message (if it is a campaign's) to the message's
    status: what the send answered, or WhatsApp's status webhook later. Idempotent. `status`,
    the message's status as an event told it, spares loading what has nothing to change
    (the recipient of the runner's own send is there already)."""
    if message_id in SETTLED_BY_RUNNER:
        return None  # its runner settles it with its batch
    recipient = db.session.scalar(select(CampaignRecipient)
                                  .where(CampaignRecipient.message_id == message_id))
    if recipient is None or (status in _STATE_OF and not moves_forward(recipient.state,
                                                                       _STATE_OF[status])):
        return recipient
    recipient = db.session.scalar(select(CampaignRecipient)
                                  .where(CampaignRecipient.id == recipient.id)
                                  .with_for_update().execution_options(populate_existing=True))
    message = get_in_organization(Message, message_id)
    if message is not None and recipient.message_id == message_id:
        apply_message(recipient, message)
    return recipient


def apply_message(recipient: CampaignRecipient, message: Message,
                  campaign_name: str | None = None) -> None:
    """Move a (locked) recipient to its message's status, with the message's stamps and, for
    a failure, its error; a failure may pause the campaign (`after_failure`)."""
    if message.status not in _STATE_OF:
        return  # queued or sending: nothing to say yet
    state = _STATE_OF[message.status]
    fields: dict[str, Any] = {"provider_message_id": message.provider_message_id}
    if state in _STAMP:
        fields[_STAMP[state]] = getattr(message, _STAMP[state]) or utcnow()
    if state in ("sent", "delivered", "read"):
        fields["sent_at"] = message.sent_at or utcnow()
    if state == "failed":
        fields.update(error_code=message.error_code, error_reason=message.error_message)
    if advance(recipient, state, campaign_name, **fields) and state == "failed":
        after_failure(recipient)


def after_failure(recipient: CampaignRecipient) -> None:
    """A recipient failed: pause the campaign if WhatsApp blames the number, or if more than
    FAILURE_LIMIT of the last FAILURE_WINDOW sends failed."""
    if recipient.error_code in jobs.PAUSE_CODES:
        pause_by_itself(recipient.campaign_id, recipient.error_code, recipient.error_reason)
        return
    last = (select(CampaignRecipient.state)
            .where(CampaignRecipient.campaign_id == recipient.campaign_id,
                   CampaignRecipient.attempted_at.is_not(None))
            .order_by(CampaignRecipient.attempted_at.desc(), CampaignRecipient.id.desc())
            .limit(FAILURE_WINDOW).subquery())
    failed = db.session.scalar(select(func.count()).select_from(last)
                               .where(last.c.state == "failed"))
    if failed > FAILURE_LIMIT:
        pause_by_itself(recipient.campaign_id, "failure_rate",
                        f"{failed} of the last {FAILURE_WINDOW} messages failed")


def note_reply(phone: str, customer_id: int | None, body: str) -> CampaignRecipient | None:
    """A person wrote: if a campaign message reached them within REPLY_WINDOW, it counts as
    replied (once) and the reply is logged on their timeline."""
    recipient = db.session.scalar(
        select(CampaignRecipient)
        .where(CampaignRecipient.phone == phone,
               CampaignRecipient.sent_at >= utcnow() - REPLY_WINDOW,
               CampaignRecipient.state.in_(("sent", "delivered", "read", "unknown")))
        .order_by(CampaignRecipient.sent_at.desc()).limit(1).with_for_update())
    if recipient is None or recipient.replied_at is not None:
        return None
    recipient.replied_at = utcnow()
    recipient.customer_id = recipient.customer_id or customer_id
    add_counts(recipient.campaign_id, {"replied": 1})
    _log_on_timeline(recipient, "campaign_replied", body)
    return recipient
