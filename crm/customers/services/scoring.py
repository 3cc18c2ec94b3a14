"""Lead scoring: the rules an admin edits, the score each customer gets from what they did,
and why ("+20 replied on WhatsApp in the last 7 days").

Customers are rescored when something they did reaches the CRM (crm/customers/events.py), on
a change of stage or custom field (customers.py, board.py), after the rules change, and
nightly for the decay (crm/customers/jobs.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask_babel import get_locale, get_translations
from flask_babel import gettext as _
from sqlalchemy import delete, func, select, text

from crm.customers.models import Customer, CustomerActivity, SalesStage, ScoringRule
from crm.customers.services.fields import (
    check_bool,
    check_custom_value,
    check_int,
    field_definitions_by_key,
)
from crm.customers.services.nightly import RESCORE_JOB
from crm.customers.services.stages import check_stage, ensure_default_stages
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.i18n import isolate
from crm.jobs import BULK_QUEUE, enqueue
from crm.models import utcnow
from crm.tenancy import current_organization_id, get_in_organization
from crm.validation import collect

RULE_KINDS = ("replied_recently", "message_count", "stage_reached", "ticket_opened",
              "custom_field", "decay")


def list_rules() -> list[ScoringRule]:
    """The scoring rules (a new organization's defaults come with its default stages)."""
    query = select(ScoringRule).order_by(ScoringRule.id)
    rules = list(db.session.scalars(query))
    if not rules:
        ensure_default_stages()
        rules = list(db.session.scalars(query))
    return rules


def save_rules(actor: User, rules: object) -> list[ScoringRule]:
    """Replace the scoring rules; every customer is rescored by a job."""
    if not isinstance(rules, list | tuple) or len(rules) > 50:
        raise ValidationError({"rules": _("Send at most %(n)d rules.", n=50)})
    checked, errors = [], {}
    for index, rule in enumerate(rules):
        try:
            checked.append(_check_rule(rule, f"rules-{index}-"))
        except ValidationError as exc:
            errors.update(exc.fields)
    if errors:
        raise ValidationError(errors)
    db.session.execute(delete(ScoringRule))
    saved = [ScoringRule(**values) for values in checked]
    db.session.add_all(saved)
    db.session.flush()
    audit("scoring.rules_saved", actor, None, count=len(saved))
    enqueue(RESCORE_JOB, queue=BULK_QUEUE)
    return saved


def _check_rule(rule: object, prefix: str) -> dict[str, Any]:
    """One rule of the form: {kind, params, points, is_active}; errors keyed prefix+field."""
    kind = rule.get("kind") if isinstance(rule, Mapping) else None
    if kind not in RULE_KINDS:
        raise ValidationError({f"{prefix}kind": _("Choose one of the listed options.")})
    params = rule.get("params") if isinstance(rule.get("params"), Mapping) else {}
    checked = {"kind": kind, **collect({
        "points": lambda: check_int(rule.get("points"), f"{prefix}points", -1000, 1000),
        "is_active": lambda: check_bool(rule.get("is_active", True), f"{prefix}is_active"),
        "params": lambda: _rule_params(kind, params, prefix),
    })}
    if kind == "decay":  # what each period takes away, typed as 5 or as -5
        checked["points"] = abs(checked["points"])
    return checked


def _rule_params(kind: str, params: Mapping, prefix: str) -> dict[str, Any]:
    if kind == "custom_field":
        return _rule_field(params, prefix)

    def number(name: str, low: int, high: int):
        return lambda: check_int(params.get(name), f"{prefix}{name}", low, high)

    return collect({
        "replied_recently": {"days": number("days", 1, 365)},
        "ticket_opened": {"days": number("days", 1, 365)},
        "message_count": {"min": number("min", 1, 100_000)},
        "stage_reached": {"stage_id": lambda: _rule_stage(params.get("stage_id"), prefix)},
        "decay": {"every_days": number("every_days", 1, 365), "max": number("max", 0, 10_000)},
    }[kind])


def _rule_stage(raw: object, prefix: str) -> int:
    stage = check_stage(raw, f"{prefix}stage_id")
    if stage is None:
        raise ValidationError({f"{prefix}stage_id": _("Choose a stage of the pipeline.")})
    return stage.id


def _rule_field(params: Mapping, prefix: str) -> dict[str, Any]:
    definition = field_definitions_by_key().get(params.get("key"))
    if definition is None:
        raise ValidationError({f"{prefix}key": _("There is no such custom field.")})
    return {"key": definition.key, "label": definition.label,
            "value": check_custom_value(definition, params.get("value"), f"{prefix}value")}


@dataclass(frozen=True)
class Signals:
    """What a customer did, as the timeline records it."""

    messages_in: int = 0
    last_message_in: datetime | None = None
    last_ticket: datetime | None = None


def signals_for(customer_ids: list[int]) -> dict[int, Signals]:
    """Signals of many customers in one query over their timelines."""
    if not customer_ids:
        return {}
    is_in = CustomerActivity.type == "whatsapp_in"
    rows = db.session.execute(
        select(CustomerActivity.customer_id, func.count().filter(is_in),
               func.max(CustomerActivity.created_at).filter(is_in),
               func.max(CustomerActivity.created_at).filter(
                   CustomerActivity.type == "ticket_opened"))
        .where(CustomerActivity.customer_id.in_(customer_ids),
               CustomerActivity.type.in_(("whatsapp_in", "ticket_opened")))
        .group_by(CustomerActivity.customer_id))
    return {row[0]: Signals(row[1], row[2], row[3]) for row in rows}


@dataclass(frozen=True)
class RuleSpec:
    kind: str
    params: dict
    points: int


@dataclass(frozen=True)
class StageSpec:
    id: int
    position: int
    is_lost: bool
    name_ar: str
    name_en: str


@dataclass(frozen=True)
class ScoringContext:
    """What scoring many customers shares: the active rules and the pipeline, copied out of
    the session so that a job committing between batches does not reload them."""

    rules: list[RuleSpec]
    stages: dict[int, StageSpec]
    now: datetime

    @classmethod
    def load(cls) -> ScoringContext:
        rules = [RuleSpec(r.kind, dict(r.params), r.points) for r in list_rules() if r.is_active]
        stages = ({s.id: StageSpec(s.id, s.position, s.is_lost, s.name_ar, s.name_en)
                   for s in db.session.scalars(select(SalesStage))}
                  if any(rule.kind == "stage_reached" for rule in rules) else {})
        return cls(rules, stages, utcnow())


def compute_score(customer: Customer, signals: Signals, context: ScoringContext
                  ) -> tuple[int, list[dict]]:
    """The score and why: [{points, reason, detail}], one entry per rule that counted."""
    breakdown = []
    for rule in context.rules:
        entry = _apply_rule(rule, customer, signals, context)
        if entry is not None and entry["points"]:
            breakdown.append(entry)
    return max(0, sum(entry["points"] for entry in breakdown)), breakdown


def _apply_rule(rule: RuleSpec, customer: Customer, signals: Signals,
                context: ScoringContext) -> dict | None:
    params, now = rule.params, context.now
    entry = {"points": rule.points, "reason": rule.kind, "detail": dict(params)}
    if rule.kind == "replied_recently":
        recent = signals.last_message_in and now - signals.last_message_in \
            <= timedelta(days=params["days"])
        return entry if recent else None
    if rule.kind == "message_count":
        return entry if signals.messages_in >= params["min"] else None
    if rule.kind == "ticket_opened":
        recent = signals.last_ticket and now - signals.last_ticket \
            <= timedelta(days=params["days"])
        return entry if recent else None
    if rule.kind == "stage_reached":
        return _stage_entry(entry, customer, context.stages)
    if rule.kind == "custom_field":
        return entry if customer.custom_fields.get(params["key"]) == params["value"] else None
    return _decay_entry(entry, abs(rule.points), customer.last_contacted_at, now)


def _decay_entry(entry: dict, points: int, last_contact: datetime | None, now: datetime
                 ) -> dict | None:
    """What the time since the last contact takes away (a subtraction, never an addition).

    A customer never contacted has no recency signal, so nothing. A contact after `now` (the
    clock an import or the nightly run read before writing) is zero days old, not -1.
    """
    if last_contact is None:
        return None
    params = entry["detail"]
    days = max(0, (now - last_contact).days)
    loss = min(days // params["every_days"] * points, params["max"])
    entry.update(points=-loss, detail={**params, "days": days})
    return entry


def _stage_entry(entry: dict, customer: Customer, stages: dict[int, StageSpec]) -> dict | None:
    target = stages.get(entry["detail"]["stage_id"])
    current = stages.get(customer.stage_id)
    if target is None or current is None or current.is_lost:
        return None
    if (current.position, current.id) < (target.position, target.id):
        return None
    entry["detail"].update(name_ar=target.name_ar, name_en=target.name_en)
    return entry


def recompute_score(customer: Customer, context: ScoringContext | None = None
                    ) -> tuple[int, list[dict]]:
    """Score one customer now (after something they did or a change of stage)."""
    context = context or ScoringContext.load()
    signals = signals_for([customer.id]).get(customer.id, Signals())
    score, breakdown = compute_score(customer, signals, context)
    if customer.score != score or customer.score_breakdown != breakdown:
        customer.score, customer.score_breakdown = score, breakdown
    return score, breakdown


def rescore_customers(customer_ids: list[int], context: ScoringContext) -> int:
    """Score many customers with two queries and one UPDATE (of those that changed).

    Reads plain rows, not entities: an import or the nightly run scores thousands.
    """
    customers = db.session.execute(select(
        Customer.id, Customer.stage_id, Customer.custom_fields, Customer.last_contacted_at,
        Customer.score, Customer.score_breakdown)
        .where(Customer.id.in_(customer_ids))).all()
    signals = signals_for(customer_ids)
    changed = []
    for customer in customers:
        score, breakdown = compute_score(customer, signals.get(customer.id, Signals()), context)
        if customer.score != score or customer.score_breakdown != breakdown:
            changed.append((customer.id, score, json.dumps(breakdown, ensure_ascii=False)))
    if changed:
        db.session.execute(text("""
            UPDATE customers c SET score = r.score, score_breakdown = r.breakdown
            FROM unnest(CAST(:ids AS bigint[]), CAST(:scores AS integer[]),
                        CAST(:breakdowns AS jsonb[])) AS r(id, score, breakdown)
            WHERE c.id = r.id AND c.organization_id = :org"""), {
            "org": current_organization_id(), "ids": [row[0] for row in changed],
            "scores": [row[1] for row in changed], "breakdowns": [row[2] for row in changed]})
    for id_, _score, _breakdown in changed:  # a copy loaded earlier is now out of date
        loaded = db.session.identity_map.get(db.session.identity_key(Customer, id_))
        if loaded is not None:
            db.session.expire(loaded, ["score", "score_breakdown"])
    return len(changed)


def explain_score(customer: Customer) -> list[str]:
    """Why the score is what it is, one line per rule: "+20 replied in the last 7 days"."""
    return explainer()(customer.score_breakdown)


def explainer() -> Callable[[list[dict]], list[str]]:
    """explain_score() for many stored breakdowns, a page of customers: the language is
    looked up once, and each distinct line is written once. A page repeats the same few
    lines ("-5 no contact for 14 days"), and translating each anew cost more than the
    page's SQL."""
    language = str(get_locale() or "ar")
    written: dict[str, str] = {}
    # The catalog, looked up once: gettext looks the language up again on every call, and
    # a page's lines differ by their numbers ("no contact for 12 days"), so most are new.
    catalog = get_translations().ugettext

    def translate(message: str, **values: Any) -> str:
        return catalog(message) % values

    def explain(breakdown: list[dict]) -> list[str]:
        lines = []
        for entry in breakdown:
            key = repr(entry)
            if key not in written:
                written[key] = f"{entry['points']:+d} {_reason(entry, language, translate)}"
            lines.append(written[key])
        return lines

    return explain


def _reason(entry: dict, language: str, _: Callable[..., str] = _) -> str:
    """A rule's reason, translated by `_` (the module's gettext, or a page's catalog)."""
    detail = entry.get("detail", {})
    reason = entry.get("reason")
    if reason == "replied_recently":
        return _("replied on WhatsApp in the last %(days)d days", days=detail["days"])
    if reason == "message_count":
        return _("sent at least %(n)d WhatsApp messages", n=detail["min"])
    if reason == "ticket_opened":
        return _("opened a ticket in the last %(days)d days", days=detail["days"])
    if reason == "stage_reached":
        return _("reached the stage %(stage)s",
                 stage=isolate(detail.get(f"name_{language}", "")))
    if reason == "custom_field":
        return _("%(field)s is %(value)s", field=isolate(detail.get("label")),
                 value=isolate(detail.get("value")))
    if reason == "decay":
        return _("no contact for %(days)d days", days=detail.get("days", 0))
    return str(reason)


def describe_rule(rule: ScoringRule) -> str:
    """An admin's reading of a rule ("+20 replied on WhatsApp in the last 7 days")."""
    if rule.kind == "decay":
        return _("-%(points)d every %(days)d days without contact (at most -%(max)d)",
                 points=abs(rule.points), days=rule.params["every_days"],
                 max=rule.params["max"])
    language = str(get_locale() or "ar")
    detail = dict(rule.params)
    if rule.kind == "stage_reached":
        stage = get_in_organization(SalesStage, rule.params["stage_id"])
        detail.update(name_ar=stage.name_ar if stage else "", name_en=stage.name_en
                      if stage else "")
    return f"{rule.points:+d} {_reason({'reason': rule.kind, 'detail': detail}, language)}"
