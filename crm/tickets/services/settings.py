"""Ticketing's settings: the defaults a new organization gets, ticket types, SLA policies, the
business calendar (hours and holidays), escalation rules, support keywords, auto-close and
round-robin; and the SLA context the clocks run by.

Every change that moves due moments (a policy, the hours, a holiday, the rules, the time zone)
has the organization's open tickets computed again by a job after commit (`recompute_later`):
the cost of a settings change grows with open tickets, once, never the timer's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from datetime import date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from crm.errors import ConflictError, ValidationError
from crm.extensions import db
from crm.foundation.models import Team, User
from crm.foundation.services import audit, current_organization
from crm.jobs import JobCall, enqueue_many_now
from crm.models import utcnow
from crm.search import fold_text
from crm.tenancy import current_organization_id, get_in_organization
from crm.tickets import sla
from crm.tickets.calendar import (
    DAY_MINUTES,
    Calendar,
    country_holidays,
    country_weekend,
    default_hours,
)
from crm.tickets.models import (
    CLOCKS,
    DEFAULT_TYPES,
    PRIORITIES,
    BusinessHours,
    EscalationRule,
    Holiday,
    SlaPolicy,
    SupportKeyword,
    TicketSettings,
    TicketType,
)
from crm.tickets.services.common import (
    check_bool,
    check_choice,
    check_datetime,
    check_id,
    check_int,
    check_text,
    check_worker,
    collect,
    log,
    not_found,
)
from crm.transaction import on_commit_collect

DEFAULT_KEYWORDS = ("مشكلة", "عطل", "شكوى", "لا يعمل", "ما يشتغل", "خلل", "تعطل", "استرجاع",
                    "استرداد", "إرجاع", "problem", "broken", "refund", "issue", "not working",
                    "complaint", "error")
MAX_TARGET_MINUTES = 365 * DAY_MINUTES
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_CONTEXT = "tickets.sla_context"


# -- the defaults ------------------------------------------------------------------------------

def ensure_defaults() -> TicketSettings:
    """The organization's ticket settings, made with every default on first use: the four
    types, the default SLA policy, 09:00–17:00 on its country's working days, its country's
    holidays through the end of next year, and the support keywords."""
    settings = db.session.scalar(select(TicketSettings))
    if settings is not None:
        return settings
    made = db.session.execute(
        insert(TicketSettings).values(organization_id=current_organization_id())
        .on_conflict_do_nothing(index_elements=["organization_id"])
        .returning(TicketSettings.id)).scalar()
    if made is not None:  # else a parallel transaction made them: they are its to make
        _make_defaults()
    return db.session.scalar(select(TicketSettings))


def _make_defaults() -> None:
    organization = current_organization()
    db.session.add_all(TicketType(key=key, name_ar=arabic, name_en=english, position=position)
                       for position, (key, arabic, english) in enumerate(DEFAULT_TYPES))
    db.session.add_all(
        SlaPolicy(priority=priority, first_response_minutes=targets.first_response,
                  next_response_minutes=targets.next_response,
                  resolution_minutes=targets.resolution)
        for priority, targets in sla.DEFAULT_TARGETS.items())
    db.session.add_all(
        BusinessHours(weekday=weekday, start_minute=start, end_minute=end)
        for weekday, intervals in default_hours(country_weekend(organization.country)).items()
        for start, end in intervals)
    db.session.add_all(SupportKeyword(keyword=word, folded=fold_text(word))
                       for word in DEFAULT_KEYWORDS)
    db.session.flush()
    top_up_holidays()
    log.info("ticketing defaults made for organization %s", organization.id)


def get_settings() -> TicketSettings:
    return ensure_defaults()


def update_settings(actor: User, data: Mapping) -> TicketSettings:
    """Change `auto_close_days` (1–365) and `round_robin` (each only when given)."""
    settings = ensure_defaults()
    checks = {}
    if "auto_close_days" in data:
        checks["auto_close_days"] = lambda: check_int(data["auto_close_days"],
                                                      "auto_close_days", 1, 365)
    if "round_robin" in data:
        checks["round_robin"] = lambda: check_bool(data["round_robin"], "round_robin")
    values = collect(checks)
    for name, value in values.items():
        setattr(settings, name, value)
    audit("tickets.settings_updated", actor, settings, **values)
    if "auto_close_days" in values:
        recompute_later()
    return settings


# -- the SLA context ---------------------------------------------------------------------------

def load_context() -> sla.SlaContext:
    """What the organization's clocks run by, read once per unit of work (settings changes
    forget it)."""
    cache = db.session.info.setdefault(_CONTEXT, {})
    org_id = current_organization_id()
    if org_id not in cache:
        settings = ensure_defaults()
        hours: dict[int, list[tuple[int, int]]] = {}
        for row in db.session.scalars(select(BusinessHours).order_by(BusinessHours.start_minute)):
            hours.setdefault(row.weekday, []).append((row.start_minute, row.end_minute))
        days = frozenset(db.session.scalars(select(Holiday.day).where(
            Holiday.removed_at.is_(None))))
        policies = {(policy.priority, policy.type_id): sla.Targets(
            policy.first_response_minutes, policy.next_response_minutes,
            policy.resolution_minutes) for policy in db.session.scalars(select(SlaPolicy))}
        rules = tuple(sla.Rule(rule.id, rule.metric, rule.minutes_after)
                      for rule in db.session.scalars(select(EscalationRule)))
        calendar = Calendar(ZoneInfo(current_organization().timezone),
                            {day: tuple(intervals) for day, intervals in hours.items()}, days)
        cache[org_id] = sla.SlaContext(calendar, policies, rules,
                                       timedelta(days=settings.auto_close_days))
    return cache[org_id]


def forget_context() -> None:
    db.session.info.pop(_CONTEXT, None)


def recompute_later() -> None:
    """Have the organization's open tickets' clocks computed again, by one job after commit,
    with the settings as they are then."""
    forget_context()
    on_commit_collect("tickets.recompute", current_organization_id(), _enqueue_recomputes)


def _enqueue_recomputes(org_ids: list[int]) -> None:
    enqueue_many_now([JobCall("crm.tickets.jobs:recompute_clocks", (), org_id,
                              "tickets: recompute clocks", f"tickets-recompute-{org_id}")
                      for org_id in sorted(set(org_ids))])


def sla_preview(priority: object, opened_at: object, type_id: object = None
                ) -> dict[str, datetime]:
    """When a ticket of `priority` opened at `opened_at` would be due (the settings page's
    worked example), by the same code as real tickets."""
    values = collect({
        "priority": lambda: check_choice(priority, "priority", PRIORITIES),
        "opened_at": lambda: check_datetime(opened_at, "opened_at") or utcnow(),
        "type_id": lambda: check_id(type_id, "type_id"),
    })
    return sla.preview(load_context(), values["priority"], values["type_id"],
                       values["opened_at"])


# -- ticket types ----------------------------------------------------------------------------

def list_types() -> list[TicketType]:
    ensure_defaults()
    return list(db.session.scalars(select(TicketType).order_by(TicketType.position,
                                                               TicketType.id)))


def access_type(type_id: int) -> TicketType:
    ticket_type = get_in_organization(TicketType, type_id)
    if ticket_type is None:
        raise not_found()
    return ticket_type


def default_type() -> TicketType | None:
    """What a ticket is when nobody says: Support, else the first type."""
    types = list_types()
    return next((t for t in types if t.key == "support"), types[0] if types else None)


def _type_names(data: Mapping, current: TicketType | None = None) -> dict:
    return collect({
        name: (lambda name=name: check_text(
            data.get(name, getattr(current, name, None)), name, 80, required=True))
        for name in ("name_ar", "name_en")})


def create_type(actor: User, data: Mapping) -> TicketType:
    values = _type_names(data)
    position = len(list_types())
    ticket_type = TicketType(**values, position=position)
    db.session.add(ticket_type)
    db.session.flush()
    audit("tickets.type_created", actor, ticket_type, **values)
    return ticket_type


def update_type(actor: User, ticket_type: TicketType, data: Mapping) -> TicketType:
    for name, value in _type_names(data, ticket_type).items():
        setattr(ticket_type, name, value)
    audit("tickets.type_updated", actor, ticket_type, name_en=ticket_type.name_en)
    return ticket_type


def delete_type(actor: User, ticket_type: TicketType) -> None:
    """Delete a type: its tickets keep going without one; its own SLA policies go."""
    audit("tickets.type_deleted", actor, ticket_type, name_en=ticket_type.name_en)
    db.session.delete(ticket_type)
    db.session.flush()
    recompute_later()


# -- SLA policies ----------------------------------------------------------------------------

def list_policies() -> list[SlaPolicy]:
    ensure_defaults()
    order = {priority: rank for rank, priority in enumerate(PRIORITIES)}
    return sorted(db.session.scalars(select(SlaPolicy)),
                  key=lambda policy: (policy.type_id or 0, order[policy.priority]))


def set_policies(actor: User, rows: object) -> list[SlaPolicy]:
    """Replace the policies: one per priority (required), and any per priority and type.
    Each row: priority, type_id (optional), first_response_minutes, next_response_minutes,
    resolution_minutes. Errors are keyed `policies.<row>.<field>`."""
    if not isinstance(rows, list) or len(rows) > 4 * 50:
        raise ValidationError({"policies": _("Send a list of policies.")})
    checked, errors = [], {}
    for index, row in enumerate(rows):
        try:
            checked.append(_policy(row))
        except ValidationError as exc:
            errors |= {f"policies.{index}.{name}": message
                       for name, message in exc.fields.items()}
    keys = [(policy.priority, policy.type_id) for policy in checked]
    if not errors and len(set(keys)) < len(keys):
        errors["policies"] = _("Give each priority (and type) one policy only.")
    if not errors and not {(p, None) for p in PRIORITIES} <= set(keys):
        errors["policies"] = _("Give targets for every priority.")
    if errors:
        raise ValidationError(errors)
    ensure_defaults()
    db.session.execute(delete(SlaPolicy))
    db.session.add_all(checked)
    db.session.flush()
    audit("tickets.sla_policies_updated", actor, None, policies=[
        [p.priority, p.type_id, p.first_response_minutes, p.next_response_minutes,
         p.resolution_minutes] for p in checked])
    recompute_later()
    return list_policies()


def _policy(row: object) -> SlaPolicy:
    if not isinstance(row, Mapping):
        raise ValidationError({"priority": _("Choose one of the listed options.")})

    def type_id() -> int | None:
        raw = check_id(row.get("type_id"), "type_id")
        if raw is not None and get_in_organization(TicketType, raw) is None:
            raise ValidationError({"type_id": _("Choose a ticket type.")})
        return raw

    values = collect({
        "priority": lambda: check_choice(row.get("priority"), "priority", PRIORITIES),
        "type_id": type_id,
        **{f"{clock}_minutes": (lambda clock=clock: check_int(
            row.get(f"{clock}_minutes"), f"{clock}_minutes", 1, MAX_TARGET_MINUTES))
           for clock in CLOCKS},
    })
    return SlaPolicy(**values)


# -- business hours ----------------------------------------------------------------------------

def business_hours() -> dict[int, list[tuple[int, int]]]:
    """The working intervals of each weekday (Monday 0 ... Sunday 6), in minutes."""
    return {weekday: list(intervals)
            for weekday, intervals in load_context().calendar.hours.items()}


def set_business_hours(actor: User, rows: object) -> dict[int, list[tuple[int, int]]]:
    """Replace the working hours. Each row: weekday (0 Monday ... 6 Sunday), start and end
    as "HH:MM" ("24:00" ends at midnight). Intervals of a day may not overlap; the week
    needs some working time. Errors are keyed `hours.<row>.<field>`."""
    if not isinstance(rows, list) or len(rows) > 7 * 12:
        raise ValidationError({"hours": _("Send a list of working hours.")})
    intervals, errors = [], {}
    for index, row in enumerate(rows):
        try:
            intervals.append(_interval(row))
        except ValidationError as exc:
            errors |= {f"hours.{index}.{name}": message for name, message in exc.fields.items()}
    if not errors and not intervals:
        errors["hours"] = _("Give the week some working hours.")
    for weekday in range(7):
        day = sorted((start, end) for w, start, end in intervals if w == weekday)
        if any(later[0] < earlier[1] for earlier, later in pairwise(day)):
            errors["hours"] = _("The hours of a day overlap.")
    if errors:
        raise ValidationError(errors)
    ensure_defaults()
    db.session.execute(delete(BusinessHours))
    db.session.add_all(BusinessHours(weekday=weekday, start_minute=start, end_minute=end)
                       for weekday, start, end in intervals)
    db.session.flush()
    audit("tickets.business_hours_updated", actor, None,
          hours=[list(interval) for interval in sorted(intervals)])
    recompute_later()
    return business_hours()


def _interval(row: object) -> tuple[int, int, int]:
    if not isinstance(row, Mapping):
        raise ValidationError({"weekday": _("Choose a day of the week.")})
    values = collect({
        "weekday": lambda: check_int(row.get("weekday"), "weekday", 0, 6),
        "start": lambda: _minute(row.get("start"), "start"),
        "end": lambda: _minute(row.get("end"), "end"),
    })
    if values["start"] >= values["end"]:
        raise ValidationError({"end": _("End after the start.")})
    return values["weekday"], values["start"], values["end"]


def _minute(raw: object, field: str) -> int:
    """Minutes from midnight of a "HH:MM" time (Arabic digits too)."""
    match = _CLOCK.fullmatch(fold_text(raw.strip())) if isinstance(raw, str) else None
    if match is None:
        raise ValidationError({field: _("Enter a time such as 09:00.")})
    minute = int(match.group(1)) * 60 + int(match.group(2))
    if int(match.group(2)) > 59 or minute > DAY_MINUTES:
        raise ValidationError({field: _("Enter a time such as 09:00.")})
    return minute


# -- holidays ---------------------------------------------------------------------------------

def list_holidays(year: int | None = None) -> list[Holiday]:
    ensure_defaults()
    query = select(Holiday).where(Holiday.removed_at.is_(None)).order_by(Holiday.day)
    if year is not None:
        query = query.where(Holiday.day >= date(year, 1, 1), Holiday.day <= date(year, 12, 31))
    return list(db.session.scalars(query))


def access_holiday(holiday_id: int) -> Holiday:
    holiday = get_in_organization(Holiday, holiday_id)
    if holiday is None or holiday.removed_at is not None:
        raise not_found()
    return holiday


def add_holiday(actor: User, data: Mapping) -> Holiday:
    """A day off of the organization's own (one the country's list lacks, a company day)."""
    values = collect({"day": lambda: _day(data.get("day")),
                      "name": lambda: check_text(data.get("name"), "name", 120, required=True)})
    ensure_defaults()
    holiday = db.session.scalar(select(Holiday).where(Holiday.day == values["day"]))
    if holiday is not None and holiday.removed_at is None:
        raise ConflictError(_("This day is a holiday already."),
                            {"day": _("Choose another day.")})
    if holiday is None:
        holiday = Holiday(day=values["day"])
        db.session.add(holiday)
    holiday.name, holiday.source, holiday.removed_at = values["name"], "custom", None
    db.session.flush()
    audit("tickets.holiday_added", actor, holiday, day=values["day"].isoformat(),
          name=values["name"])
    recompute_later()
    return holiday


def rename_holiday(actor: User, holiday: Holiday, name: object) -> Holiday:
    holiday.name = check_text(name, "name", 120, required=True)
    audit("tickets.holiday_renamed", actor, holiday, name=holiday.name)
    return holiday


def remove_holiday(actor: User, holiday: Holiday) -> None:
    """Work on this day after all. A country's holiday stays removed when the year ahead is
    topped up again."""
    audit("tickets.holiday_removed", actor, holiday, day=holiday.day.isoformat(),
          name=holiday.name)
    if holiday.source == "country":
        holiday.removed_at = utcnow()
    else:
        db.session.delete(holiday)
    db.session.flush()
    recompute_later()


def _day(raw: object) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    if isinstance(raw, str) and len(raw) <= 10:
        with suppress(ValueError):
            return date.fromisoformat(raw)
    raise ValidationError({"day": _("Enter a date.")})


def top_up_holidays() -> int:
    """Fill the country's holidays from the start of this year to the end of next year, so
    a year ahead is always known (the recovery job runs this yearly for every organization);
    days already there — renamed, removed, or added by an admin — are left as they are.
    How many days were added."""
    organization = current_organization()
    today = datetime.now(ZoneInfo(organization.timezone)).date()
    through = date(today.year + 1, 12, 31)
    days = country_holidays(organization.country, range(today.year, through.year + 1),
                            organization.default_language)
    added = 0
    if days:
        added = len(db.session.execute(
            insert(Holiday).values([
                {"organization_id": organization.id, "day": day, "name": name[:120],
                 "source": "country"} for day, name in days.items()])
            .on_conflict_do_nothing(index_elements=["organization_id", "day"])
            .returning(Holiday.id)).all())
    db.session.execute(update(TicketSettings).values(holidays_filled_through=through))
    forget_context()
    return added


def country_changed() -> None:
    """The organization moved country: its country holidays from today are the new
    country's (its own days stay), and its clocks follow."""
    organization = current_organization()
    today = datetime.now(ZoneInfo(organization.timezone)).date()
    db.session.execute(delete(Holiday).where(Holiday.source == "country", Holiday.day >= today))
    top_up_holidays()
    recompute_later()


# -- escalation rules -------------------------------------------------------------------------

def list_escalation_rules() -> list[EscalationRule]:
    return list(db.session.scalars(select(EscalationRule).order_by(EscalationRule.metric,
                                                                   EscalationRule.minutes_after,
                                                                   EscalationRule.id)))


def access_escalation_rule(rule_id: int) -> EscalationRule:
    rule = get_in_organization(EscalationRule, rule_id)
    if rule is None:
        raise not_found()
    return rule


def _rule_values(data: Mapping, rule: EscalationRule | None) -> dict:
    def current(name: str) -> object:
        return data[name] if name in data else getattr(rule, name, None)

    def team() -> int | None:
        team_id = check_id(current("team_id"), "team_id")
        if team_id is not None and get_in_organization(Team, team_id) is None:
            raise ValidationError({"team_id": _("Choose a team.")})
        return team_id

    def assignee() -> int | None:
        user = check_worker(current("assignee_id"))
        return user.id if user else None

    values = collect({
        "metric": lambda: check_choice(current("metric"), "metric", CLOCKS),
        "minutes_after": lambda: check_int(current("minutes_after"), "minutes_after", 0,
                                           MAX_TARGET_MINUTES),
        "raise_priority": lambda: check_bool(current("raise_priority"), "raise_priority"),
        "notify": lambda: check_bool(current("notify"), "notify"),
        "assignee_id": assignee,
        "team_id": team,
    })
    if not (values["raise_priority"] or values["notify"] or values["assignee_id"]
            or values["team_id"]):
        raise ValidationError({"actions": _("Choose at least one action.")})
    return values


def create_escalation_rule(actor: User, data: Mapping) -> EscalationRule:
    """After `minutes_after` business minutes past a breach of `metric`: `raise_priority`,
    reassign to `assignee_id` or `team_id`, `notify` (the assignee and team managers)."""
    rule = EscalationRule(**_rule_values(data, None))
    db.session.add(rule)
    db.session.flush()
    audit("tickets.escalation_rule_created", actor, rule, metric=rule.metric,
          minutes_after=rule.minutes_after)
    recompute_later()
    return rule


def update_escalation_rule(actor: User, rule: EscalationRule, data: Mapping) -> EscalationRule:
    for name, value in _rule_values(data, rule).items():
        setattr(rule, name, value)
    audit("tickets.escalation_rule_updated", actor, rule, metric=rule.metric,
          minutes_after=rule.minutes_after)
    recompute_later()
    return rule


def delete_escalation_rule(actor: User, rule: EscalationRule) -> None:
    audit("tickets.escalation_rule_deleted", actor, rule, metric=rule.metric)
    db.session.delete(rule)
    db.session.flush()
    recompute_later()


# -- support keywords ------------------------------------------------------------------------

def list_keywords() -> list[SupportKeyword]:
    ensure_defaults()
    return list(db.session.scalars(select(SupportKeyword).order_by(SupportKeyword.keyword)))


def access_keyword(keyword_id: int) -> SupportKeyword:
    keyword = get_in_organization(SupportKeyword, keyword_id)
    if keyword is None:
        raise not_found()
    return keyword


def add_keyword(actor: User, raw: object) -> SupportKeyword:
    word = check_text(raw, "keyword", 60, required=True)
    ensure_defaults()
    folded = fold_text(word)
    if db.session.scalar(select(SupportKeyword.id).where(SupportKeyword.folded == folded)):
        raise ConflictError(_("This keyword is on the list already."),
                            {"keyword": _("Already on the list.")})
    keyword = SupportKeyword(keyword=word, folded=folded)
    db.session.add(keyword)
    db.session.flush()
    audit("tickets.keyword_added", actor, keyword, keyword=word)
    return keyword


def remove_keyword(actor: User, keyword: SupportKeyword) -> None:
    audit("tickets.keyword_removed", actor, keyword, keyword=keyword.keyword)
    db.session.delete(keyword)
    db.session.flush()
