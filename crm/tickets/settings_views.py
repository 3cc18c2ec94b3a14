"""Ticketing's settings pages, for admins (managers read them): SLA policies with their worked
example, escalation rules, auto-close and round-robin; the business calendar (hours of each
weekday, holidays); ticket types and support keywords; teams.

Plain forms (boosted by htmx): a change answers 303 back to its page, a refusal shows the page
again with the errors beside the fields (422). Routes of the `tickets` blueprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import flash, request
from flask_babel import format_date, lazy_gettext
from flask_babel import gettext as _

from crm.errors import ConflictError, ServiceError, ValidationError
from crm.foundation import teams as team_services
from crm.foundation.services import current_organization
from crm.i18n import format_moment, isolate
from crm.permissions import require_settings
from crm.tickets import services
from crm.tickets.models import CLOCKS, PRIORITIES
from crm.tickets.views import blueprint, workers
from crm.web import me, page, see_other

WEEKDAY_ORDER = (6, 0, 1, 2, 3, 4, 5)  # Sunday first, as the Gulf's week starts
INTERVALS_PER_DAY = 2  # a split shift: the form offers two intervals a day
METRIC_LABELS = {"first_response": lazy_gettext("First response"),
                 "next_response": lazy_gettext("Next response"),
                 "resolution": lazy_gettext("Resolution")}


def _refused(exc: ServiceError) -> dict:
    return {"errors": exc.fields, "form_error": None if exc.fields else exc.message}


# -- SLA: policies, the worked example, escalation, general ----------------------------------

def _example(params) -> dict:
    """The worked example: when a ticket of this priority opened then would be due, by the
    same code as real tickets (services.sla_preview, what POST /api/tickets/sla-preview
    answers). By default a normal ticket opened next Thursday at 16:00."""
    zone = ZoneInfo(current_organization().timezone)
    today = datetime.now(zone).date()
    thursday = today + timedelta(days=(3 - today.weekday()) % 7)
    default_opened = datetime(thursday.year, thursday.month, thursday.day, 16, 0)
    priority = params.get("priority") if params.get("priority") in PRIORITIES else "normal"
    opened_raw = params.get("opened_at") or default_opened.isoformat(timespec="minutes")
    try:
        due = services.sla_preview(priority, opened_raw)
    except ValidationError as exc:
        return {"priority": priority, "opened_at": opened_raw, "error": exc.fields}
    opened = datetime.fromisoformat(opened_raw)
    opened = opened if opened.tzinfo else opened.replace(tzinfo=zone)
    return {"priority": priority, "opened_at": opened_raw, "error": {},
            "opened_text": _weekday_moment(opened),
            "first_response_text": _weekday_moment(due["first_response_due_at"]),
            "resolution_text": _weekday_moment(due["resolution_due_at"])}


def _weekday_moment(moment: datetime) -> str:
    """"Thursday 16:00" (with the date), in the organization's time zone."""
    return f"{format_date(moment, 'EEEE')} {format_moment(moment)}"


def _policy_rows() -> list[dict]:
    """The policies as form rows: one per priority, those per type, and an empty one."""
    rows = [{"priority": p.priority, "type_id": p.type_id or "",
             **{f"{clock}_minutes": getattr(p, f"{clock}_minutes") for clock in CLOCKS}}
            for p in services.list_policies()]
    rows.append({"priority": "", "type_id": ""})
    return rows


def _posted_policies() -> list[dict]:
    """The policy rows of the form, leaving out rows with no targets (the empty one, or one
    cleared to remove it)."""
    rows = []
    index = 0
    while f"policies-{index}-priority" in request.form:
        row = {name: request.form.get(f"policies-{index}-{name}", "").strip()
               for name in ("priority", "type_id", *(f"{c}_minutes" for c in CLOCKS))}
        index += 1
        if not any(row[f"{clock}_minutes"] for clock in CLOCKS):
            continue
        rows.append({**row, "type_id": row["type_id"] or None})
    return rows


def _sla_page(status: int = 200, **context):
    context.setdefault("policy_rows", _policy_rows())
    return page("tickets/settings/sla.html", status, settings=services.get_settings(),
                types=services.list_types(), priorities=PRIORITIES, clocks=CLOCKS,
                rules=services.list_escalation_rules(), workers=workers(),
                teams=team_services.list_teams(), metric_labels=METRIC_LABELS,
                example=_example(request.args), **context)


@blueprint.get("/settings")
@require_settings("ticketing", "read")
def settings():
    return _sla_page()


@blueprint.post("/settings/general")
@require_settings("ticketing", "write")
def update_general():
    try:
        services.update_settings(me(), {"auto_close_days": request.form.get("auto_close_days"),
                                        "round_robin": request.form.get("round_robin") == "1"})
    except ValidationError as exc:
        return _sla_page(exc.status, **_refused(exc))
    flash(_("The ticket settings were saved."), "success")
    return see_other("tickets.settings")


@blueprint.post("/settings/policies")
@require_settings("ticketing", "write")
def update_policies():
    rows = _posted_policies()
    try:
        services.set_policies(me(), rows)
    except ValidationError as exc:
        return _sla_page(exc.status, policy_rows=[*rows, {"priority": "", "type_id": ""}],
                         **_refused(exc))
    flash(_("The SLA policies were saved. Open tickets' clocks follow them."), "success")
    return see_other("tickets.settings")


def _rule_data() -> dict:
    return {"metric": request.form.get("metric"),
            "minutes_after": request.form.get("minutes_after"),
            "raise_priority": request.form.get("raise_priority") == "1",
            "notify": request.form.get("notify") == "1",
            "assignee_id": request.form.get("assignee_id") or None,
            "team_id": request.form.get("team_id") or None}


@blueprint.post("/settings/escalation")
@require_settings("ticketing", "write")
def add_escalation_rule():
    try:
        services.create_escalation_rule(me(), _rule_data())
    except ValidationError as exc:
        return _sla_page(exc.status, rule_values=request.form, **_refused(exc))
    flash(_("The escalation rule was added."), "success")
    return see_other("tickets.settings", _anchor="escalation")


@blueprint.post("/settings/escalation/<int:rule_id>/delete")
@require_settings("ticketing", "write")
def delete_escalation_rule(rule_id: int):
    services.delete_escalation_rule(me(), services.access_escalation_rule(rule_id))
    flash(_("The escalation rule was deleted."), "success")
    return see_other("tickets.settings", _anchor="escalation")


# -- the business calendar ----------------------------------------------------------------------

def _minute_text(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _hour_rows(intervals_by_day: Mapping[int, list[tuple[str, str]]] | None = None
               ) -> list[dict]:
    """Each weekday, Sunday first, with its name, whether it works and up to two intervals
    as "HH:MM": those saved, or those posted (`intervals_by_day`) to show them again."""
    if intervals_by_day is None:
        intervals_by_day = {weekday: [(_minute_text(start), _minute_text(end))
                                      for start, end in spans]
                            for weekday, spans in services.business_hours().items()}
    monday = date(2024, 1, 1)  # a Monday: the names of the days come from Babel
    rows = []
    for weekday in WEEKDAY_ORDER:
        intervals = list(intervals_by_day.get(weekday, []))
        rows.append({"weekday": weekday, "open": bool(intervals),
                     "name": format_date(monday + timedelta(days=weekday), "EEEE"),
                     "intervals": (intervals + [("", "")] * INTERVALS_PER_DAY)[
                         :max(INTERVALS_PER_DAY, len(intervals))]})
    return rows


def _posted_hours() -> list[dict]:
    """Working intervals from the form: for each day that works, those with a start or an
    end filled in."""
    rows = []
    for weekday in range(7):
        if request.form.get(f"day-{weekday}-open") != "1":
            continue
        for index in range(INTERVALS_PER_DAY * 2):
            start = request.form.get(f"day-{weekday}-{index}-start", "").strip()
            end = request.form.get(f"day-{weekday}-{index}-end", "").strip()
            if start or end:
                rows.append({"weekday": weekday, "start": start, "end": end})
    return rows


def _refused_hours(posted: list[dict], exc: ValidationError) -> dict:
    """The refused form as it was typed, each row's error (`hours.<row>.<field>`) under its
    day, and the week's own error above."""
    typed: dict[int, list[tuple[str, str]]] = {}
    for row in posted:
        typed.setdefault(row["weekday"], []).append((row["start"], row["end"]))
    day_errors: dict[int, list[str]] = {}
    for key, message in exc.fields.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(posted):
            day_errors.setdefault(posted[int(parts[1])]["weekday"], []).append(message)
    return {"hour_rows": _hour_rows(typed), "day_errors": day_errors,
            "errors": {"hours": exc.fields["hours"]} if "hours" in exc.fields else {}}


def _calendar_page(status: int = 200, **context):
    year = request.args.get("year", type=int) or datetime.now(
        ZoneInfo(current_organization().timezone)).year
    context.setdefault("hour_rows", _hour_rows())
    return page("tickets/settings/calendar.html", status,
                holidays=services.list_holidays(year), year=year,
                timezone=current_organization().timezone, **context)


@blueprint.get("/settings/calendar")
@require_settings("ticketing", "read")
def calendar_settings():
    return _calendar_page()


@blueprint.post("/settings/hours")
@require_settings("ticketing", "write")
def update_hours():
    posted = _posted_hours()
    try:
        services.set_business_hours(me(), posted)
    except ValidationError as exc:
        return _calendar_page(exc.status, **_refused_hours(posted, exc))
    flash(_("The working hours were saved. Open tickets' clocks follow them."), "success")
    return see_other("tickets.calendar_settings")


@blueprint.post("/settings/holidays")
@require_settings("ticketing", "write")
def add_holiday():
    try:
        holiday = services.add_holiday(me(), {"day": request.form.get("day"),
                                              "name": request.form.get("name")})
    except (ValidationError, ConflictError) as exc:
        return _calendar_page(exc.status, holiday_values=request.form, **_refused(exc))
    flash(_("%(name)s was added to the holidays.", name=isolate(holiday.name)), "success")
    return see_other("tickets.calendar_settings", year=holiday.day.year, _anchor="holidays")


@blueprint.post("/settings/holidays/<int:holiday_id>/rename")
@require_settings("ticketing", "write")
def rename_holiday(holiday_id: int):
    holiday = services.access_holiday(holiday_id)
    try:
        services.rename_holiday(me(), holiday, request.form.get("name"))
    except ValidationError as exc:
        return _calendar_page(exc.status, renaming=holiday.id, **_refused(exc))
    flash(_("The holiday was renamed."), "success")
    return see_other("tickets.calendar_settings", year=holiday.day.year, _anchor="holidays")


@blueprint.post("/settings/holidays/<int:holiday_id>/remove")
@require_settings("ticketing", "write")
def remove_holiday(holiday_id: int):
    holiday = services.access_holiday(holiday_id)
    year = holiday.day.year
    services.remove_holiday(me(), holiday)
    flash(_("The day is a working day again."), "success")
    return see_other("tickets.calendar_settings", year=year, _anchor="holidays")


# -- types and keywords ------------------------------------------------------------------------

def _types_page(status: int = 200, **context):
    return page("tickets/settings/types.html", status, types=services.list_types(),
                keywords=services.list_keywords(), **context)


@blueprint.get("/settings/types")
@require_settings("ticketing", "read")
def types_settings():
    return _types_page()


@blueprint.post("/settings/types")
@require_settings("ticketing", "write")
def add_type():
    try:
        services.create_type(me(), {"name_ar": request.form.get("name_ar"),
                                    "name_en": request.form.get("name_en")})
    except ValidationError as exc:
        return _types_page(exc.status, type_values=request.form, **_refused(exc))
    flash(_("The ticket type was added."), "success")
    return see_other("tickets.types_settings")


@blueprint.post("/settings/types/<int:type_id>")
@require_settings("ticketing", "write")
def update_type(type_id: int):
    ticket_type = services.access_type(type_id)
    try:
        services.update_type(me(), ticket_type, {"name_ar": request.form.get("name_ar"),
                                                 "name_en": request.form.get("name_en")})
    except ValidationError as exc:
        return _types_page(exc.status, editing=ticket_type.id, **_refused(exc))
    flash(_("The ticket type was saved."), "success")
    return see_other("tickets.types_settings")


@blueprint.post("/settings/types/<int:type_id>/delete")
@require_settings("ticketing", "write")
def delete_type(type_id: int):
    services.delete_type(me(), services.access_type(type_id))
    flash(_("The ticket type was deleted."), "success")
    return see_other("tickets.types_settings")


@blueprint.post("/settings/keywords")
@require_settings("ticketing", "write")
def add_keyword():
    try:
        services.add_keyword(me(), request.form.get("keyword"))
    except (ValidationError, ConflictError) as exc:
        return _types_page(exc.status, keyword_value=request.form.get("keyword", ""),
                           **_refused(exc))
    flash(_("The keyword was added."), "success")
    return see_other("tickets.types_settings", _anchor="keywords")


@blueprint.post("/settings/keywords/<int:keyword_id>/delete")
@require_settings("ticketing", "write")
def delete_keyword(keyword_id: int):
    services.remove_keyword(me(), services.access_keyword(keyword_id))
    flash(_("The keyword was removed."), "success")
    return see_other("tickets.types_settings", _anchor="keywords")


# -- teams -------------------------------------------------------------------------------------

def _team_data() -> dict:
    return {"name": request.form.get("name"),
            "manager_id": request.form.get("manager_id") or None,
            "member_ids": [raw for raw in request.form.getlist("member_ids") if raw]}


def _teams_page(status: int = 200, **context):
    teams = team_services.list_teams()
    return page("tickets/settings/teams.html", status, teams=teams, workers=workers(),
                members={team.id: set(team_services.member_ids(team.id)) for team in teams},
                **context)


@blueprint.get("/settings/teams")
@require_settings("ticketing", "read")
def teams_settings():
    return _teams_page()


@blueprint.post("/settings/teams")
@require_settings("ticketing", "write")
def add_team():
    try:
        team = team_services.create_team(me(), _team_data())
    except (ValidationError, ConflictError) as exc:
        return _teams_page(exc.status, team_values=request.form, **_refused(exc))
    flash(_("%(name)s was added.", name=isolate(team.name)), "success")
    return see_other("tickets.teams_settings")


@blueprint.post("/settings/teams/<int:team_id>")
@require_settings("ticketing", "write")
def update_team(team_id: int):
    team = team_services.access_team(team_id)
    try:
        team_services.update_team(me(), team, _team_data())
    except (ValidationError, ConflictError) as exc:
        return _teams_page(exc.status, editing=team.id, **_refused(exc))
    flash(_("%(name)s was saved.", name=isolate(team.name)), "success")
    return see_other("tickets.teams_settings")


@blueprint.post("/settings/teams/<int:team_id>/delete")
@require_settings("ticketing", "write")
def delete_team(team_id: int):
    team = team_services.access_team(team_id)
    team_services.delete_team(me(), team)
    flash(_("The team was deleted; its tickets stay, without a team."), "success")
    return see_other("tickets.teams_settings")

