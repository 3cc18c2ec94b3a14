"""Pages of campaigns: the list, the draft's wizard, the campaign's live results, consent.

Thin by design: each view reads the request, calls the campaigns' services and picks the
answer. Admins and managers see and write campaigns; agents and members see nothing of them
(crm/permissions.py). The consent words and the numbers' sending settings are the admins'
(the `settings` area), as is the consent ledger's export.

A draft is edited on one page in steps (details, audience, message, schedule and pace), each
its own form saved on its own, with a preview of the message as a recipient's phone shows it;
a campaign that has started shows its progress live (crm/campaigns/live.py swaps the progress
bars and status badges in; the summary refetches itself on the campaign events).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext, ngettext
from markupsafe import Markup, escape

from crm import navigation
from crm.campaigns import audience, consent, exports, reports, services, settings, templates
from crm.campaigns.labels import (
    CONSENT_ACTION_LABELS,
    CONSENT_METHOD_LABELS,
    STATE_LABELS,
    STATUS_LABELS,
)
from crm.campaigns.models import MESSAGING_LIMITS, RECIPIENT_STATES, STATUSES, Campaign
from crm.campaigns.templates import TemplateChoice
from crm.customers import services as customers
from crm.customers import views as customer_views
from crm.customers.imports import IMPORT_MAX_BYTES
from crm.customers.models import Customer
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.foundation.services import current_organization
from crm.foundation.views import add_audit_labels
from crm.i18n import isolate, text_direction
from crm.permissions import can, require
from crm.validation import collect, parse_id
from crm.versions import StaleVersionError, form_version
from crm.web import allow_uploads, fragment, is_htmx, me, page, see_other
from crm.whatsapp import media
from crm.whatsapp.live import add_contact_section
from crm.whatsapp.profiles import access_profile, list_profiles
from crm.whatsapp.services import access_conversation
from crm.whatsapp.views import PROVIDER_LABELS

blueprint = Blueprint("campaigns", __name__, url_prefix="/campaigns")

PAGE = 25
RECIPIENTS_PAGE = 50
PICK_LIMIT = 10
PREVIEW_CANDIDATES = 20
PREVIEW_SEARCH_MAX = 100
CHOSEN_SHOWN = 200
HISTORY_SHOWN = 10
RECENT_SENDS = 3  # campaign messages the inbox's panel lists
VARIABLES = ("{name}", "{first_name}", "{company}")
AUDIENCE_LABELS = {"segment_id": lazy_gettext("A segment"), "tag": lazy_gettext("A tag"),
                   "customer_ids": lazy_gettext("Chosen customers"),
                   "csv": lazy_gettext("A CSV file of numbers")}
MESSAGING_LIMIT_LABELS = {250: lazy_gettext("250 a day"), 2000: lazy_gettext("2,000 a day"),
                          10000: lazy_gettext("10,000 a day"),
                          100000: lazy_gettext("100,000 a day"),
                          None: lazy_gettext("Unlimited")}
# The wizard's steps, in order, and the fields each one saves.
STEPS = ("details", "audience", "message", "schedule")

navigation.add(navigation.NavItem("campaigns.list_campaigns", lazy_gettext("Campaigns"),
                                  "campaigns", "read", "megaphone", 35))
add_audit_labels({
    "campaign.created": lazy_gettext("Campaign created"),
    "campaign.updated": lazy_gettext("Campaign changed"),
    "campaign.scheduled": lazy_gettext("Campaign scheduled"),
    "campaign.started": lazy_gettext("Campaign started"),
    "campaign.paused": lazy_gettext("Campaign paused"),
    "campaign.resumed": lazy_gettext("Campaign resumed"),
    "campaign.cancelled": lazy_gettext("Campaign cancelled"),
    "campaign.deleted": lazy_gettext("Campaign deleted"),
    "campaign.exported": lazy_gettext("Campaign results exported"),
    "campaigns.keywords_changed": lazy_gettext("Opt-out keywords changed"),
    "campaigns.number_settings_changed": lazy_gettext("Sending settings of a number changed"),
    "consent.exported": lazy_gettext("Consent history exported"),
    "consent.opt_out": lazy_gettext("Opt-out recorded"),
    "consent.opt_in": lazy_gettext("Opt-in recorded"),
}, {
    "campaigns": lazy_gettext("Campaign"),
    "consent_events": lazy_gettext("Consent"),
    "campaign_settings": lazy_gettext("Campaign settings"),
    "campaign_number_settings": lazy_gettext("Sending settings"),
})
allow_uploads(blueprint, {"campaigns.upload_audience"}, IMPORT_MAX_BYTES)
allow_uploads(blueprint, {"campaigns.attach_media"}, media.MAX_UPLOAD_BYTES)


@blueprint.context_processor
def _labels() -> dict:
    return {"status_labels": STATUS_LABELS, "state_labels": STATE_LABELS,
            "audience_labels": AUDIENCE_LABELS, "consent_action_labels": CONSENT_ACTION_LABELS,
            "consent_method_labels": CONSENT_METHOD_LABELS, "reason_text": services.reason_text}


@blueprint.app_template_filter("wa_format")
def _wa_format(text: str) -> Markup:
    """A message's text as WhatsApp shows it: *bold*, _italic_, ~struck~ (escaped first)."""
    html = str(escape(text))
    for mark, tag in (("*", "strong"), ("_", "em"), ("~", "s")):
        pattern = re.escape(mark) + r"(?=\S)([^" + re.escape(mark) + r"\n]+?)(?<=\S)" \
            + re.escape(mark)
        html = re.sub(pattern, rf"<{tag}>\1</{tag}>", html)
    return Markup(html)


# -- the list ---------------------------------------------------------------------------------

def _progress(campaigns: list[Campaign]) -> dict[int, reports.Progress]:
    results = reports.results_of(campaign.id for campaign in campaigns)
    return {campaign.id: reports.progress_of(results[campaign.id], campaign.list_pending)
            for campaign in campaigns if campaign.id in results}


@blueprint.get("/")
@require("campaigns", "read")
def list_campaigns():
    status = request.args.get("status") or None
    if status not in (None, *STATUSES):
        status = None
    search = request.args.get("q", "")
    after = parse_id(request.args.get("cursor"))
    rows, next_cursor = services.list_campaigns(status, after, PAGE, search=search)
    context = {"campaigns": rows, "next_cursor": next_cursor, "after": after,
               "status_filter": status, "search": search,
               "progress": _progress(rows),
               "filter_args": {key: value for key, value in
                               (("status", status), ("q", search)) if value}}
    if is_htmx():
        return fragment("campaigns/_rows.html", **context)
    return page("campaigns/list.html", statuses=STATUSES, **context)


# -- a new draft, and its wizard ----------------------------------------------------------------

def _profile_choices() -> list[tuple[str, str]]:
    return [(str(profile.id), f"{profile.display_name} · {PROVIDER_LABELS[profile.provider]}")
            for profile in list_profiles()]


@blueprint.route("/new", methods=["GET", "POST"])
@require("campaigns", "write")
def new_campaign():
    choices = _profile_choices()
    if request.method == "GET":
        return page("campaigns/new.html", profile_choices=choices,
                    values={"profile_id": choices[0][0] if choices else ""})
    try:
        campaign = services.create_campaign(me(), {"name": request.form.get("name"),
                                                   "profile_id": request.form.get("profile_id")})
    except ValidationError as exc:
        return page("campaigns/new.html", 422, profile_choices=choices, values=request.form,
                    errors=exc.fields)
    flash(_("The draft %(name)s was saved: choose who it goes to.",
            name=isolate(campaign.name)), "success")
    return see_other("campaigns.edit_campaign", campaign_id=campaign.id, _anchor="audience")


def _draft(campaign_id: int) -> Campaign:
    """A draft to edit; any other campaign sends its editor to its results page."""
    campaign = services.access_campaign(campaign_id)
    if campaign.status != "draft":
        flash(_("Only a draft campaign can be changed."), "error")
        abort(see_other("campaigns.show_campaign", campaign_id=campaign.id))
    return campaign


def _form_values(campaign: Campaign) -> dict[str, Any]:
    """What the wizard's forms show of a saved draft."""
    kind = audience.describe(campaign.audience)
    template = campaign.message.get("template") or {}
    return {
        "version": str(campaign.version), "name": campaign.name,
        "profile_id": str(campaign.profile_id), "audience_kind": kind,
        "segment_id": str(campaign.audience.get("segment_id", "")),
        "tag": campaign.audience.get("tag", ""),
        "text": campaign.message.get("text", ""),
        "parameters": template.get("parameters", []),
        "when": "later" if campaign.scheduled_at else "now",
        "scheduled_at": _local_input(campaign.scheduled_at),
        "quiet": "on" if campaign.quiet_start else "",
        "quiet_start": campaign.quiet_start.strftime("%H:%M") if campaign.quiet_start else "22:00",
        "quiet_end": campaign.quiet_end.strftime("%H:%M") if campaign.quiet_end else "08:00",
        "rate_per_minute": str(campaign.rate_per_minute or ""),
        "delay_min": str(campaign.delay_min_seconds or ""),
        "delay_max": str(campaign.delay_max_seconds or ""),
    }


def _local_input(moment) -> str:
    """A moment as a datetime-local input shows it: in the organization's time zone."""
    if moment is None:
        return ""
    return moment.astimezone(customers.organization_timezone()).strftime("%Y-%m-%dT%H:%M")


def _templates(campaign: Campaign) -> list[TemplateChoice]:
    return templates.template_choices(campaign.profile)


def _chosen_template(campaign: Campaign, choices: list[TemplateChoice],
                     raw_id: str | None) -> TemplateChoice | None:
    """The template a form picked (by id), else the draft's."""
    if raw_id is not None:
        wanted = parse_id(raw_id)
        return next((choice for choice in choices if choice.id == wanted), None)
    saved = campaign.message.get("template") or {}
    return next((choice for choice in choices if (choice.name, choice.language)
                 == (saved.get("name"), saved.get("language"))), None)


def _preview(campaign: Campaign, args: Mapping) -> dict[str, Any]:
    """The preview and whom it offers: the audience's first people, or those matching `q`;
    the message for the one picked (`customer_id`, or `row` of a file), else the first
    offered. The one shown is always among the options, picked."""
    search = " ".join(str(args.get("q", "")).split())[:PREVIEW_SEARCH_MAX]
    param = "row" if "csv" in campaign.audience else "customer_id"
    context: dict[str, Any] = {"preview_search": search, "preview_param": param,
                               "candidates": [], "preview": None, "preview_error": None,
                               "unmatched": False}
    try:
        offered = context["candidates"] = audience.candidates(campaign.audience,
                                                              PREVIEW_CANDIDATES, search)
        picked = parse_id(args.get(param))
        if offered and (search or picked is None) and picked not in {c.key for c in offered}:
            picked = offered[0].key  # a search shows its first match
        chosen = next((candidate for candidate in offered if candidate.key == picked), None)
        preview = services.preview_message(campaign, **{param: picked}, recipient=chosen)
    except ValidationError as exc:
        context["preview_error"] = next(iter(exc.fields.values()))
        return context
    context["unmatched"] = bool(search and not offered)
    context["preview"] = preview
    shown = preview.recipient
    if shown is not None and all(c.key != shown.key for c in offered):
        offered.insert(0, shown)
    return context


def _audience_count(campaign: Campaign) -> int | None:
    try:
        return audience.count(campaign.audience) if campaign.audience else None
    except NotFoundError:
        return None


def _wizard(campaign: Campaign, status: int = 200, *, step: str | None = None,
            values: Mapping | None = None, errors: Mapping | None = None,
            **context: Any) -> tuple[str, int]:
    """The draft's page: every step's form (`values` and `errors` for the one posted), the
    preview, and what is still missing before it can start."""
    saved = _form_values(campaign)
    shown = dict(saved)
    if values is not None:
        shown.update({key: values.get(key, "") for key in values})
        shown["parameters"] = values.getlist("parameters") if hasattr(values, "getlist") \
            else values.get("parameters", [])
        shown["version"] = saved["version"]
    choices = _templates(campaign)
    settings_row = settings.number_settings(campaign.profile)
    crm_on = can("crm", "read")
    chosen_ids = campaign.audience.get("customer_ids", [])
    return page(
        "campaigns/edit.html", status, campaign=campaign, step=step, values=shown,
        errors=errors or {}, profile_choices=_profile_choices(), crm_on=crm_on,
        segment_choices=[(str(segment.id), segment.name) for segment in
                         customers.list_segments()] if crm_on else [],
        chosen_customers=audience.chosen_customers(chosen_ids[:CHOSEN_SHOWN]),
        templates=choices, number_settings=settings_row,
        chosen=_chosen_template(campaign, choices, context.pop("template_id", None)),
        variables=VARIABLES,
        custom_keys=[d.key for d in customers.list_field_definitions()] if crm_on else [],
        audience_count=_audience_count(campaign),
        timezone=current_organization().timezone,
        **context if "preview" in context else {**_preview(campaign, {}), **context})


@blueprint.get("/<int:campaign_id>/edit")
@require("campaigns", "write")
def edit_campaign(campaign_id: int):
    return _wizard(_draft(campaign_id))


def _step_data(campaign: Campaign, step: str, form: Mapping) -> dict[str, Any]:
    """What one step's form posted, as the services take it."""
    if step == "details":
        data: dict[str, Any] = {"name": form.get("name"), "profile_id": form.get("profile_id")}
        new_profile = parse_id(form.get("profile_id"))
        new = next((p for p in list_profiles() if p.id == new_profile), None)
        if new is not None and (new.provider == "cloud") != (campaign.profile.provider == "cloud"):
            data["message"] = {}  # a text cannot go from a cloud number, nor a template from others
        return data
    if step == "audience":
        kind = form.get("audience_kind")
        if kind == "segment_id":
            return {"audience": {"segment_id": form.get("segment_id")}}
        if kind == "tag":
            return {"audience": {"tag": form.get("tag")}}
        if kind == "customer_ids":
            return {"audience": {"customer_ids": form.getlist("customer_ids")}}
        raise ValidationError({"audience": _("Choose a segment, a tag or customers.")})
    if step == "message":
        if campaign.profile.provider != "cloud":
            return {"message": {"text": form.get("text", "")}}
        choice = _chosen_template(campaign, _templates(campaign), form.get("template_id", ""))
        if choice is None:
            raise ValidationError({"template": _("Choose one of the number's approved "
                                                 "templates.")})
        return {"message": {"template": {"name": choice.name, "language": choice.language,
                                         "parameters": form.getlist("parameters")}}}
    later = form.get("when") == "later"
    data = {"scheduled_at": form.get("scheduled_at") if later else None,
            "quiet_hours": [form.get("quiet_start"), form.get("quiet_end")]
            if form.get("quiet") == "on" else None,
            "rate_per_minute": form.get("rate_per_minute", "")}
    if campaign.profile.provider == "web":
        low, high = form.get("delay_min", ""), form.get("delay_max", "")
        data["delay_seconds"] = [low, high] if low or high else None
    return data


def _check_dated(step: str, form: Mapping) -> None:
    """«Later» needs a date: the services read no date as «now», so only the form knows."""
    if step == "schedule" and form.get("when") == "later" and not form.get("scheduled_at"):
        raise ValidationError({"scheduled_at": _("Enter a date and time.")})


@blueprint.post("/<int:campaign_id>/edit")
@require("campaigns", "write")
def update_campaign(campaign_id: int):
    campaign = _draft(campaign_id)
    step = request.form.get("step")
    if step not in STEPS:
        step = "details"
    try:
        data = _step_data(campaign, step, request.form)
        # Both run, so the form says every mistake at once; an error rolls the save back.
        collect({"dated": lambda: _check_dated(step, request.form),
                 "saved": lambda: services.update_campaign(
                     me(), campaign, data,
                     expected_version=form_version(request.form.get("version")))})
    except StaleVersionError:
        return _wizard(campaign, 409, step=step, values=request.form, stale=True,
                       template_id=request.form.get("template_id"))
    except (ValidationError, ConflictError) as exc:
        return _wizard(campaign, exc.status, step=step, values=request.form,
                       errors=exc.fields or {step: exc.message},
                       template_id=request.form.get("template_id"))
    flash(_("Saved."), "success")
    following = STEPS[min(STEPS.index(step) + 1, len(STEPS) - 1)]
    return see_other("campaigns.edit_campaign", campaign_id=campaign.id,
                     _anchor=following if step != "schedule" else "start")


@blueprint.post("/<int:campaign_id>/audience")
@require("campaigns", "write")
def upload_audience(campaign_id: int):
    campaign = _draft(campaign_id)
    upload = request.files.get("file")
    try:
        if upload is None or not upload.filename:
            raise ValidationError({"file": _("Choose a file to upload.")})
        services.upload_audience(me(), campaign, upload)
    except ValidationError as exc:
        # The file's form shows only while «CSV file» is chosen: keep it chosen for its error.
        return _wizard(campaign, 422, step="audience", values={"audience_kind": "csv"},
                       errors=exc.fields)
    rows = campaign.audience["csv"]["rows"]
    flash(ngettext("%(num)s row was read from the file.", "%(num)s rows were read from the file.",
                   rows), "success")
    return see_other("campaigns.edit_campaign", campaign_id=campaign.id, _anchor="message")


@blueprint.get("/<int:campaign_id>/customers")
@require("campaigns", "write")
def pick_customers(campaign_id: int):
    """Customers whose name or phone matches, to tick into the draft's audience."""
    campaign = _draft(campaign_id)
    query = request.args.get("q", "")
    found: list[Customer] = []
    if query.strip() and can("crm", "read"):
        found, _next = customers.list_customers(customers.CustomerFilters(search=query),
                                                limit=PICK_LIMIT)
    chosen = set(campaign.audience.get("customer_ids", []))
    return fragment("campaigns/_pick_results.html", found=found, chosen=chosen, query=query,
                    campaign=campaign)


@blueprint.post("/<int:campaign_id>/media")
@require("campaigns", "write")
def attach_media(campaign_id: int):
    campaign = _draft(campaign_id)
    upload = None if request.form.get("remove") else request.files.get("file")
    try:
        if upload is not None and not upload.filename:
            raise ValidationError({"file": _("Choose a file to upload.")})
        services.attach_media(me(), campaign, upload)
    except ValidationError as exc:
        return _wizard(campaign, 422, step="message", errors=exc.fields)
    flash(_("The file was attached.") if upload else _("The file was removed."), "success")
    return see_other("campaigns.edit_campaign", campaign_id=campaign.id, _anchor="message")


@blueprint.post("/<int:campaign_id>/templates/sync")
@require("campaigns", "write")
def sync_templates(campaign_id: int):
    """Read the number's templates from WhatsApp now."""
    campaign = _draft(campaign_id)
    try:
        count = templates.sync_templates(campaign.profile)
    except ConflictError as exc:
        flash(exc.message, "error")
    else:
        flash(_("%(n)s templates were read from WhatsApp.", n=count), "success")
    return see_other("campaigns.edit_campaign", campaign_id=campaign.id, _anchor="message")


@blueprint.get("/<int:campaign_id>/template-fields")
@require("campaigns", "write")
def template_fields(campaign_id: int):
    """The parameter fields of the template just picked (the form swaps them in)."""
    campaign = _draft(campaign_id)
    choice = _chosen_template(campaign, _templates(campaign), request.args.get("template_id", ""))
    return fragment("campaigns/_template_fields.html", chosen=choice, values={"parameters": []},
                    errors={}, variables=VARIABLES)


@blueprint.get("/<int:campaign_id>/preview")
@require("campaigns", "read")
def preview_campaign(campaign_id: int):
    """The message as the chosen recipient's phone shows it."""
    campaign = services.access_campaign(campaign_id)
    context = _preview(campaign, request.args)
    if is_htmx() or campaign.status != "draft":
        return fragment("campaigns/_preview_answer.html", campaign=campaign, **context)
    return _wizard(campaign, **context)


# -- start, pause, resume, cancel, delete -----------------------------------------------------

@blueprint.post("/<int:campaign_id>/start")
@require("campaigns", "write")
def start_campaign(campaign_id: int):
    campaign = services.access_campaign(campaign_id)
    try:
        services.start_campaign(me(), campaign)
    except ValidationError as exc:
        return _wizard(campaign, 422, step="start", errors=exc.fields,
                       start_error=_("Finish the steps marked below before starting."))
    except ConflictError as exc:
        flash(exc.message, "error")
        return see_other("campaigns.show_campaign", campaign_id=campaign.id)
    if campaign.status == "scheduled":
        flash(_("%(name)s is scheduled.", name=isolate(campaign.name)), "success")
    else:
        flash(_("%(name)s has started.", name=isolate(campaign.name)), "success")
    return see_other("campaigns.show_campaign", campaign_id=campaign.id)


def _act(campaign_id: int, action, done: str) -> Response:
    campaign = services.access_campaign(campaign_id)
    try:
        action(me(), campaign)
    except ConflictError as exc:
        flash(exc.message, "error")
    else:
        flash(done, "success")
    return see_other("campaigns.show_campaign", campaign_id=campaign.id)


@blueprint.post("/<int:campaign_id>/start-now")
@require("campaigns", "write")
def start_now(campaign_id: int):
    return _act(campaign_id, services.start_scheduled_now, _("Sending now."))


@blueprint.post("/<int:campaign_id>/pause")
@require("campaigns", "write")
def pause_campaign(campaign_id: int):
    return _act(campaign_id, services.pause_campaign, _("Paused: nothing more is sent."))


@blueprint.post("/<int:campaign_id>/resume")
@require("campaigns", "write")
def resume_campaign(campaign_id: int):
    return _act(campaign_id, services.resume_campaign, _("Resumed."))


@blueprint.post("/<int:campaign_id>/cancel")
@require("campaigns", "write")
def cancel_campaign(campaign_id: int):
    return _act(campaign_id, services.cancel_campaign,
                _("Cancelled: what was sent stays sent, nobody else gets it."))


@blueprint.post("/<int:campaign_id>/delete")
@require("campaigns", "write")
def delete_campaign(campaign_id: int):
    campaign = services.access_campaign(campaign_id)
    name = campaign.name
    try:
        services.delete_campaign(me(), campaign)
    except ConflictError as exc:
        flash(exc.message, "error")
        return see_other("campaigns.show_campaign", campaign_id=campaign.id)
    flash(_("The draft %(name)s was deleted.", name=isolate(name)), "success")
    return see_other("campaigns.list_campaigns")


# -- a campaign's results ---------------------------------------------------------------------

def _summary(campaign: Campaign) -> dict[str, Any]:
    """Status, progress, funnel, sends over time and failures."""
    results = services.campaign_results(campaign)
    rtl = text_direction() == "rtl"
    return {"campaign": campaign, "results": results,
            "progress": reports.progress_of(results, campaign.list_pending),
            "funnel": reports.funnel(results, rtl),
            "timeline": reports.sends_over_time(campaign, rtl),
            "failures": services.failure_reasons(campaign),
            # Its counts stay 0 until the list is frozen: say whom it names now.
            "expected": _audience_count(campaign)
            if campaign.list_pending in ("at_start", "at_resume", "at_time") else None,
            "pause_text": services.pause_reason_text(campaign)
            if campaign.status == "paused" else None}


def _recipients(campaign: Campaign, args: Mapping) -> dict[str, Any]:
    state = args.get("state") or None
    if state not in (None, *RECIPIENT_STATES, "replied"):
        state = None
    after = parse_id(args.get("cursor"))
    rows, next_cursor = services.list_recipients(campaign, state, after, RECIPIENTS_PAGE)
    return {"recipients": rows, "next_cursor": next_cursor, "state": state, "after": after,
            "filter_states": ("sent", "delivered", "read", "replied", "failed", "skipped",
                              "queued", "unknown")}


@blueprint.get("/<int:campaign_id>")
@require("campaigns", "read")
def show_campaign(campaign_id: int):
    campaign = services.access_campaign(campaign_id)
    if campaign.status == "draft" and can("campaigns", "write"):
        return redirect(url_for("campaigns.edit_campaign", campaign_id=campaign.id))
    return page("campaigns/show.html", **_summary(campaign),
                **_recipients(campaign, request.args))


@blueprint.get("/<int:campaign_id>/summary")
@require("campaigns", "read")
def campaign_summary(campaign_id: int):
    """The results again (the page asks when a campaign event arrives)."""
    campaign = services.access_campaign(campaign_id)
    if not is_htmx():
        return see_other("campaigns.show_campaign", campaign_id=campaign.id)
    return fragment("campaigns/_summary.html", **_summary(campaign))


@blueprint.get("/<int:campaign_id>/recipients")
@require("campaigns", "read")
def list_recipients(campaign_id: int):
    campaign = services.access_campaign(campaign_id)
    context = _recipients(campaign, request.args)
    if is_htmx():
        return fragment("campaigns/_recipient_rows.html", campaign=campaign, **context)
    return page("campaigns/show.html", **_summary(campaign), **context)


@blueprint.get("/<int:campaign_id>/recipients.csv")
@require("campaigns", "read")
def export_recipients(campaign_id: int):
    campaign = services.access_campaign(campaign_id)
    state = request.args.get("state") or None
    lines = exports.recipients_csv(me(), campaign, state)
    return Response(lines, mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=campaign-{campaign.id}-recipients.csv"})


# -- consent and sending settings (admins) ----------------------------------------------------

def _campaigns_on() -> None:
    """The admin-only pages of campaigns exist only while the module is on."""
    if not can("campaigns", "read"):
        abort(404)


def _settings_page(status: int = 200, **context: Any) -> tuple[str, int]:
    words = consent.keywords()
    context.setdefault("values", {"opt_out": "\n".join(words.opt_out),
                                  "opt_in": "\n".join(words.opt_in)})
    context.setdefault("number_errors", {})
    numbers = [(profile, settings.number_settings(profile)) for profile in list_profiles()]
    return page("campaigns/settings.html", status, numbers=numbers,
                limit_choices=[("" if limit is None else str(limit), MESSAGING_LIMIT_LABELS[limit])
                               for limit in MESSAGING_LIMITS], **context)


@blueprint.get("/settings")
@require("settings", "write")
def campaign_settings():
    _campaigns_on()
    return _settings_page()


@blueprint.post("/settings/keywords")
@require("settings", "write")
def save_keywords():
    _campaigns_on()
    try:
        consent.set_keywords(me(), request.form.get("opt_out", ""), request.form.get("opt_in", ""))
    except ValidationError as exc:
        return _settings_page(422, values=request.form, errors=exc.fields)
    flash(_("The consent words were saved."), "success")
    return see_other("campaigns.campaign_settings")


@blueprint.post("/settings/numbers/<int:profile_id>")
@require("settings", "write")
def save_number_settings(profile_id: int):
    _campaigns_on()
    profile = access_profile(profile_id)
    form = request.form
    data: dict[str, Any] = {}
    if profile.provider == "cloud":
        data = {"throughput_per_second": form.get("throughput_per_second", ""),
                "messaging_limit": form.get("messaging_limit", "")}
    elif profile.provider == "web":
        data = {"web_delay_seconds": [form.get("web_delay_min", ""), form.get("web_delay_max", "")],
                "web_daily_cap": form.get("web_daily_cap", "")}
    try:
        settings.update_number_settings(me(), profile, data)
    except ValidationError as exc:
        return _settings_page(422, number_errors={profile.id: exc.fields},
                              number_values={profile.id: form})
    flash(_("The sending settings of %(name)s were saved.", name=isolate(profile.display_name)),
          "success")
    return see_other("campaigns.campaign_settings", _anchor=f"number-{profile.id}")


@blueprint.get("/consent.csv")
@require("settings", "write")
def export_consent():
    _campaigns_on()
    return Response(exports.ledger_csv(me()), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=consent-ledger.csv"})


@blueprint.post("/consent/<int:customer_id>")
@require("campaigns", "write")
def record_consent(customer_id: int):
    """Record by hand that a customer opted out or back in (a call, a signed form)."""
    customer = customers.access_customer(customer_id)
    try:
        consent.record_by_hand(me(), request.form.get("action"), customer.phone, customer.id)
    except ValidationError as exc:
        flash(next(iter(exc.fields.values())), "error")
    else:
        flash(_("Saved."), "success")
    return redirect(url_for("customers.show_customer", customer_id=customer.id)
                    + "#consent", 303)


def consent_panel(customer: Customer) -> dict[str, Any]:
    """The customer page's consent card: opted out now or not, and the ledger's last words."""
    return consent_state(customer.phone, customer.id)


def consent_state(phone: str | None, customer_id: int | None) -> dict[str, Any]:
    """What the consent card shows of a phone (and of the customer, if known)."""
    history = consent.consent_history([phone] if phone else [], customer_id, HISTORY_SHOWN)
    return {"phone": phone, "customer_id": customer_id,
            "opted_out": bool(phone) and consent.is_opted_out(phone),
            "consent_history": history, "action_labels": CONSENT_ACTION_LABELS,
            "method_labels": CONSENT_METHOD_LABELS}


@blueprint.get("/conversations/<int:conversation_id>")
@require("whatsapp", "read")
def conversation_campaigns(conversation_id: int):
    """The inbox panel's campaigns section: whether the contact receives campaigns (the
    customer page's consent card) and the campaign messages last sent to them. Every reader
    of the panel loads it; it is empty for those who do not see campaigns (agents)."""
    conversation = access_conversation(conversation_id, me())
    if not can("campaigns", "read"):
        return fragment(None)
    customer_id = conversation.customer_id if can("crm", "read") else None
    return fragment("campaigns/_conversation_section.html", conversation=conversation,
                    panel_data=consent_state(conversation.contact_phone, customer_id),
                    sends=services.recent_sends(conversation.contact_phone, RECENT_SENDS)
                    if conversation.contact_phone else [])


customer_views.add_customer_panel(customer_views.CustomerPanel(
    "campaigns/_consent_panel.html", "campaigns", "read", consent_panel))
add_contact_section("campaigns/_conversation_campaigns.html", "campaigns")
