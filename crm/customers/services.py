"""Every write of the CRM: customers, the pipeline and its board, the activity timeline,
segments, custom fields, lead scoring and CSV imports and exports.

Each function validates, writes, records who did it and publishes what happened; none commits
(the request, job or subscriber wrapper does). Views and the API call these functions alike.

Decisions the design left open, made here:
- A deleted stage's customers move to the first remaining stage (a stage_changed activity
  each); the last stage cannot be deleted. Scoring rules about that stage go with it.
- A merged duplicate stays as a tombstone (`merged_into_id`) without phone or email: it answers
  404 everywhere, and an event that still names it (a WhatsApp message of a conversation not yet
  relinked) reaches the survivor.
- A new customer goes to the top of its stage's column; a manual or API create is owned by its
  creator unless `owner_id` is given.
- Custom field errors are keyed `cf_<key>`, as the list filters and forms name them.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import logging
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import Text, cast, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.sql import ColumnElement, Select

from crm import events
from crm.customers.models import (
    ACTIVITY_TYPES,
    FIELD_TYPES,
    SOURCES,
    Customer,
    CustomerActivity,
    CustomerImport,
    CustomFieldDefinition,
    SalesStage,
    ScoringRule,
    Segment,
)
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit, current_organization, normalize_email
from crm.models import utcnow
from crm.search import fold_text, like_pattern, normalize_phone, search_terms
from crm.tenancy import current_organization_id, get_in_organization

log = logging.getLogger("crm.customers")

BIGINT_MAX = 2**63 - 1
SCORE_LIMIT = 1_000_000
MAX_TAGS = 20
SORTS = ("newest", "oldest", "name", "score", "last_contacted")
BOARD_STEP = 1024.0
IMPORT_MAX_BYTES = 50 * 1024 * 1024
IMPORT_PREVIEW_ROWS = 5
IMPORT_FIELDS = ("name", "phone", "email", "company", "tags", "notes", "stage", "owner")
RULE_KINDS = ("replied_recently", "message_count", "stage_reached", "ticket_opened",
              "custom_field", "decay")
# Text PostgreSQL cannot store (NUL) or that is not text at all (lone surrogates), and control
# characters no one types; tabs and line breaks are fine.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_FIELD_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
_TAG_SEPARATORS = re.compile("[,،\n]")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")

DEFAULT_STAGES = (  # (Arabic, English, colour, won, lost)
    ("عميل محتمل", "New lead", "#64748b", False, False),
    ("تم التواصل", "Contacted", "#0ea5e9", False, False),
    ("مؤهل", "Qualified", "#8b5cf6", False, False),
    ("عرض سعر", "Proposal", "#f59e0b", False, False),
    ("تم الفوز", "Won", "#16a34a", True, False),
    ("خسارة", "Lost", "#dc2626", False, True),
)


class DuplicateCustomerError(ConflictError):
    """A phone number or email that another customer already has (409, naming that customer)."""

    def __init__(self, existing: Customer, fields: dict[str, str]):
        super().__init__(_("%(name)s (customer #%(id)d) already has this phone number or "
                           "email.", name=existing.name, id=existing.id), fields)
        self.existing_id = existing.id
        self.existing_name = existing.name


# -- field checks (shared by forms, the API and imports) ------------------------------------

def check_text(raw: object, field_name: str, max_length: int, *, required: bool = False,
               single_line: bool = True) -> str:
    """Text of at most `max_length` characters ("" when absent), stripped."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise ValidationError({field_name: _("Enter text.")})
    if len(raw) > max_length:
        raise ValidationError({field_name: _("Use at most %(n)d characters.", n=max_length)})
    if _CONTROL.search(raw):
        raise ValidationError({field_name: _("Remove the control characters.")})
    value = " ".join(raw.split()) if single_line else raw.strip()
    if required and not value:
        raise ValidationError({field_name: _("This field is required.")})
    return value


def check_phone(raw: object, field_name: str = "phone", region: str | None = None
                ) -> str | None:
    """A phone number in any written form, as E.164 in the organization's country (or
    `region`, which an import passes once rather than loading it for every row)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > 40:
        raise ValidationError({field_name: _("Enter a valid phone number.")})
    phone = normalize_phone(raw, region or current_organization().country)
    if phone is None:
        raise ValidationError({field_name: _("Enter a valid phone number.")})
    return phone


def check_email(raw: object, field_name: str = "email") -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str) or len(raw) > 254:
        raise ValidationError({field_name: _("Enter a valid email address.")})
    return normalize_email(raw, field_name)


def check_id(raw: object, field_name: str) -> int | None:
    """An id from a form (digits) or JSON (an integer, never a boolean); absent is None."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= BIGINT_MAX:
        raise ValidationError({field_name: _("This id is not valid.")})
    return raw


def check_bool(raw: object, field_name: str) -> bool:
    """A JSON boolean, or a form's checkbox value."""
    if isinstance(raw, bool):
        return raw
    if raw is None:
        return False
    if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise ValidationError({field_name: _("Choose yes or no.")})


def check_int(raw: object, field_name: str, low: int, high: int) -> int:
    if isinstance(raw, str) and re.fullmatch(r"-?\d{1,12}", raw.strip()):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ValidationError({field_name: _("Enter a whole number from %(low)d to %(high)d.",
                                             low=low, high=high)})
    return raw


def check_tags(raw: object, field_name: str = "tags") -> list[str]:
    """Tags as a list, or as text separated by commas (Arabic or Latin) or lines."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = _TAG_SEPARATORS.split(raw)
    if not isinstance(raw, list | tuple) or not all(isinstance(tag, str) for tag in raw):
        raise ValidationError({field_name: _("Enter tags as a list of words.")})
    tags, seen = [], set()
    for tag in raw:
        value = check_text(tag, field_name, 40)
        if value and fold_text(value) not in seen:
            seen.add(fold_text(value))
            tags.append(value)
    if len(tags) > MAX_TAGS:
        raise ValidationError({field_name: _("Use at most %(n)d tags.", n=MAX_TAGS)})
    return tags


def collect(checks: Mapping[str, Any]) -> dict[str, Any]:
    """Run each named check; report every failing field together, not just the first."""
    values, errors = {}, {}
    for name, check in checks.items():
        try:
            values[name] = check()
        except ValidationError as exc:
            errors.update(exc.fields)
    if errors:
        raise ValidationError(errors)
    return values


def _not_found() -> NotFoundError:
    return NotFoundError(_("Not found."))


def organization_timezone() -> ZoneInfo:
    """The organization's time zone (its "today" and its nights)."""
    return ZoneInfo(current_organization().timezone)


def check_datetime(raw: object, field_name: str) -> datetime | None:
    """An ISO 8601 moment; one without a zone (a datetime-local input) is in the
    organization's time zone."""
    if raw is None or raw == "":
        return None
    moment = raw if isinstance(raw, datetime) else None
    if isinstance(raw, str) and len(raw) <= 40:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            moment = None
    if moment is None or not 1900 <= moment.year <= 9998:
        raise ValidationError({field_name: _("Enter a date and time.")})
    return moment if moment.tzinfo else moment.replace(tzinfo=organization_timezone())


# -- stages -------------------------------------------------------------------------------

def ensure_default_stages() -> None:
    """Give the current organization the default pipeline (and scoring rules) if it has none.

    A pipeline always keeps at least one stage, so an organization without stages has never
    been set up. The advisory lock keeps two first uses from both creating the set.
    """
    if db.session.scalar(select(SalesStage.id).limit(1)) is not None:
        return
    db.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended("
                            "'wasl.sales_stages.' || :org, 0))"),
                       {"org": current_organization_id()})
    if db.session.scalar(select(SalesStage.id).limit(1)) is not None:
        return
    stages = [SalesStage(name_ar=ar, name_en=en, color=color, is_won=won, is_lost=lost,
                         position=position)
              for position, (ar, en, color, won, lost) in enumerate(DEFAULT_STAGES)]
    db.session.add_all(stages)
    db.session.flush()
    db.session.add_all(_default_rules(stages[2]))
    db.session.flush()


def _default_rules(qualified: SalesStage) -> list[ScoringRule]:
    return [
        ScoringRule(kind="replied_recently", params={"days": 7}, points=20),
        ScoringRule(kind="message_count", params={"min": 5}, points=10),
        ScoringRule(kind="stage_reached", params={"stage_id": qualified.id}, points=15),
        ScoringRule(kind="ticket_opened", params={"days": 30}, points=5),
        ScoringRule(kind="decay", params={"every_days": 7, "max": 30}, points=5),
    ]


def list_stages() -> list[SalesStage]:
    """The pipeline in order (created with the defaults on first use)."""
    from crm.customers.jobs import keep_nightly_rescore

    stages = list(db.session.scalars(select(SalesStage).order_by(SalesStage.position,
                                                                 SalesStage.id)))
    if not stages:
        ensure_default_stages()
        stages = list(db.session.scalars(select(SalesStage).order_by(SalesStage.position,
                                                                     SalesStage.id)))
    keep_nightly_rescore()
    return stages


def access_stage(stage_id: int) -> SalesStage:
    stage = get_in_organization(SalesStage, stage_id)
    if stage is None:
        raise _not_found()
    return stage


def _stage_checks(data: Mapping, stage: SalesStage | None) -> dict[str, Any]:
    checks = {
        "name_ar": lambda: check_text(data.get("name_ar"), "name_ar", 80, required=True),
        "name_en": lambda: check_text(data.get("name_en"), "name_en", 80, required=True),
        "color": lambda: _check_color(data.get("color")),
        "is_won": lambda: check_bool(data.get("is_won"), "is_won"),
        "is_lost": lambda: check_bool(data.get("is_lost"), "is_lost"),
    }
    if stage is not None:
        checks = {key: check for key, check in checks.items() if key in data}
    values = collect(checks)
    won = values.get("is_won", stage.is_won if stage else False)
    lost = values.get("is_lost", stage.is_lost if stage else False)
    if won and lost:
        raise ValidationError({"is_lost": _("A stage cannot be both won and lost.")})
    return values


def _check_color(raw: object) -> str:
    if raw is None or raw == "":
        return "#64748b"
    if not isinstance(raw, str) or not _COLOR.fullmatch(raw):
        raise ValidationError({"color": _("Choose a colour such as #0ea5e9.")})
    return raw.lower()


def create_stage(actor: User, data: Mapping) -> SalesStage:
    """Add a stage at the end of the pipeline."""
    values = _stage_checks(data, None)
    ensure_default_stages()
    last = db.session.scalar(select(func.max(SalesStage.position)))
    stage = SalesStage(**values, position=(last or 0) + 1)
    db.session.add(stage)
    db.session.flush()
    audit("sales_stage.created", actor, stage, name_en=stage.name_en)
    _pipeline_changed()
    return stage


def update_stage(actor: User, stage: SalesStage, data: Mapping) -> SalesStage:
    """Rename, recolour or flag a stage (only the keys present change)."""
    for key, value in _stage_checks(data, stage).items():
        setattr(stage, key, value)
    audit("sales_stage.updated", actor, stage, name_en=stage.name_en)
    _pipeline_changed()
    return stage


def reorder_stages(actor: User, ids: object) -> list[SalesStage]:
    """Put the stages in the order of `ids`, which must name each stage once."""
    stages = {stage.id: stage for stage in list_stages()}
    try:
        wanted = [check_id(value, "ids") for value in ids] if isinstance(ids, list) else None
    except ValidationError:
        wanted = None
    if wanted is None or sorted(wanted) != sorted(stages):
        raise ValidationError({"ids": _("List every stage of the pipeline once.")})
    for position, stage_id in enumerate(wanted):
        stages[stage_id].position = position
    audit("sales_stage.reordered", actor, None, ids=wanted)
    _pipeline_changed()
    return [stages[stage_id] for stage_id in wanted]


def delete_stage(actor: User, stage: SalesStage) -> SalesStage:
    """Delete a stage; its customers move to the first remaining stage, each with a
    stage_changed activity. Returns that stage."""
    target = next((s for s in list_stages() if s.id != stage.id), None)
    if target is None:
        raise ConflictError(_("The pipeline needs at least one stage."))
    data = {"from_stage_id": stage.id, "from_name_ar": stage.name_ar,
            "from_name_en": stage.name_en, "to_stage_id": target.id,
            "to_name_ar": target.name_ar, "to_name_en": target.name_en}
    db.session.execute(text("""
        INSERT INTO customer_activities (organization_id, customer_id, type, body, data, actor_id)
        SELECT organization_id, id, 'stage_changed', '', CAST(:data AS jsonb), :actor
        FROM customers WHERE organization_id = :org AND stage_id = :stage
          AND merged_into_id IS NULL"""),
        {"data": json.dumps(data), "actor": actor.id if actor else None,
         "org": current_organization_id(), "stage": stage.id})
    db.session.execute(update(Customer).where(Customer.stage_id == stage.id)
                       .values(stage_id=target.id).execution_options(synchronize_session=False))
    db.session.execute(delete(ScoringRule).where(
        ScoringRule.kind == "stage_reached",
        ScoringRule.params["stage_id"].as_integer() == stage.id))
    audit("sales_stage.deleted", actor, stage, name_en=stage.name_en, moved_to=target.id)
    db.session.delete(stage)
    db.session.flush()
    db.session.expire_all()  # customers loaded before the bulk move
    _pipeline_changed()
    return target


def _pipeline_changed() -> None:
    events.publish("sales_stages.changed", {})


# -- customers ------------------------------------------------------------------------------

def access_customer(customer_id: int) -> Customer:
    """The organization's customer with this id, or 404 (merged duplicates too)."""
    customer = get_in_organization(Customer, customer_id)
    if customer is None:
        raise _not_found()
    if customer.merged_into_id is not None:
        raise _not_found()
    return customer


def _check_owner(raw: object) -> int | None:
    owner_id = check_id(raw, "owner_id")
    if owner_id is None:
        return None
    owner = get_in_organization(User, owner_id)
    if owner is None or not owner.is_active:
        raise ValidationError({"owner_id": _("Choose a member of the team.")})
    return owner.id


def _check_stage(raw: object, field_name: str = "stage_id") -> SalesStage | None:
    stage_id = check_id(raw, field_name)
    if stage_id is None:
        return None
    stage = get_in_organization(SalesStage, stage_id)
    if stage is None:
        raise ValidationError({field_name: _("Choose a stage of the pipeline.")})
    return stage


def _customer_values(data: Mapping, customer: Customer | None) -> dict[str, Any]:
    """Check the keys of `data` that a create (every key) or an update (those present) sets."""
    checks = {
        "name": lambda: check_text(data.get("name"), "name", 160, required=True),
        "phone": lambda: check_phone(data.get("phone")),
        "email": lambda: check_email(data.get("email")),
        "company": lambda: check_text(data.get("company"), "company", 160),
        "owner_id": lambda: _check_owner(data.get("owner_id")),
        "stage_id": lambda: _check_stage(data.get("stage_id")),
        "tags": lambda: check_tags(data.get("tags")),
        "notes": lambda: check_text(data.get("notes"), "notes", 10_000, single_line=False),
        "custom_fields": lambda: check_custom_fields(
            data.get("custom_fields"), customer.custom_fields if customer else {}),
    }
    always = ("name", "custom_fields") if customer is None else ()
    return collect({key: check for key, check in checks.items()
                     if key in data or key in always})


def _ensure_unique(phone: str | None, email: str | None, customer_id: int | None = None) -> None:
    """Raise a 409 naming the customer who already has this phone number or email."""
    clauses = []
    if phone:
        clauses.append(Customer.phone == phone)
    if email:
        clauses.append(Customer.email == email)
    if not clauses:
        return
    query = select(Customer).where(or_(*clauses))
    if customer_id is not None:
        query = query.where(Customer.id != customer_id)
    existing = db.session.scalars(query.limit(2)).all()
    if not existing:
        return
    fields = {}
    for other in existing:
        message = _("%(name)s (customer #%(id)d) already has it.", name=other.name, id=other.id)
        if phone and other.phone == phone:
            fields["phone"] = message
        if email and other.email == email:
            fields["email"] = message
    raise DuplicateCustomerError(existing[0], fields)


def _save(customer: Customer, values: Mapping[str, Any]) -> None:
    """Write `values` to the customer (added when new), turning a phone or email that someone
    else wrote meanwhile into the same 409.

    The changes are made inside the savepoint: begin_nested() first flushes what is pending,
    outside it.
    """
    try:
        with db.session.begin_nested():
            db.session.add(customer)
            for key, value in values.items():
                setattr(customer, key, value)
            db.session.flush()
    except IntegrityError:
        _ensure_unique(values.get("phone"), values.get("email"), customer.id)
        raise


def _top_of(stage_id: int | None) -> float:
    lowest = db.session.scalar(select(func.min(Customer.board_position)).where(
        _in_stage(stage_id), Customer.merged_into_id.is_(None)))
    return 0.0 if lowest is None else lowest - BOARD_STEP


def _in_stage(stage_id: int | None) -> ColumnElement[bool]:
    if stage_id is None:
        return Customer.stage_id.is_(None)
    return Customer.stage_id == stage_id


def create_customer(actor: User | None, data: Mapping, source: str = "manual") -> Customer:
    """Add a customer. `data`: name, phone (any written form), email, company, owner_id,
    stage_id (default: the first stage), tags, notes, custom_fields."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source}")
    values = _customer_values(data, None)
    _ensure_unique(values.get("phone"), values.get("email"))
    stage = values.pop("stage_id", None)
    if "stage_id" not in data:
        stage = list_stages()[0]
    if "owner_id" not in data and actor is not None:
        values["owner_id"] = actor.id
    customer = Customer(source=source, stage_id=stage.id if stage else None,
                        board_position=_top_of(stage.id if stage else None))
    _save(customer, values)
    log_automatic(customer, "created", data={"source": source}, actor=actor)
    recompute_score(customer)
    log.info("customer %s created by %s (%s)", customer.id, actor, source)
    events.publish("customer.created", {"customer_id": customer.id, "source": source})
    return customer


def update_customer(actor: User | None, customer: Customer, data: Mapping) -> Customer:
    """Change the keys present in `data`; a new stage_id moves the customer on the board."""
    values = _customer_values(data, customer)
    phone = values.get("phone", customer.phone)
    email = values.get("email", customer.email)
    if phone != customer.phone or email != customer.email:
        _ensure_unique(phone, email, customer.id)
    stage = values.pop("stage_id", customer.stage)
    changed = sorted(key for key, value in values.items() if getattr(customer, key) != value)
    _save(customer, {key: values[key] for key in changed})
    if "stage_id" in data and (stage.id if stage else None) != customer.stage_id:
        _change_stage(actor, customer, stage, _top_of(stage.id if stage else None))
        changed.append("stage_id")
    elif "custom_fields" in changed:
        recompute_score(customer)
    if changed:
        log.info("customer %s updated by %s: %s", customer.id, actor, ", ".join(changed))
        events.publish("customer.updated", {"customer_id": customer.id, "fields": changed})
    return customer


def delete_customer(actor: User, customer: Customer) -> None:
    """Delete a customer and their timeline; other modules unlink what pointed at them
    (`customer.deleted`: WhatsApp conversations, tickets)."""
    db.session.execute(delete(Customer).where(Customer.merged_into_id == customer.id)
                       .execution_options(synchronize_session=False))
    audit("customer.deleted", actor, customer, name=customer.name, phone=customer.phone)
    events.publish("customer.deleted", {"customer_id": customer.id})
    db.session.delete(customer)
    db.session.flush()


def merge_customers(actor: User, survivor: Customer, duplicate: Customer) -> Customer:
    """Fold `duplicate` into `survivor`: its activities move, blanks are filled from it, and
    `customer.merged` tells the other modules to relink conversations and tickets."""
    if survivor.id == duplicate.id:
        raise ValidationError({"duplicate_id": _("Choose another customer to merge.")})
    db.session.execute(select(Customer.id).where(Customer.id.in_((survivor.id, duplicate.id)))
                       .order_by(Customer.id).with_for_update())
    phone, email = duplicate.phone, duplicate.email
    duplicate.phone = duplicate.email = None
    duplicate.merged_into_id = survivor.id
    db.session.flush()  # free the phone and email before the survivor takes them
    survivor.phone = survivor.phone or phone
    survivor.email = survivor.email or email
    survivor.company = survivor.company or duplicate.company
    survivor.owner_id = survivor.owner_id or duplicate.owner_id
    survivor.tags = check_tags([*survivor.tags, *duplicate.tags][:MAX_TAGS])
    survivor.custom_fields = {**duplicate.custom_fields, **survivor.custom_fields}
    survivor.notes = "\n\n".join(n for n in (survivor.notes, duplicate.notes) if n)
    contacts = [m for m in (survivor.last_contacted_at, duplicate.last_contacted_at) if m]
    survivor.last_contacted_at = max(contacts) if contacts else None
    db.session.execute(update(CustomerActivity)
                       .where(CustomerActivity.customer_id == duplicate.id)
                       .values(customer_id=survivor.id)
                       .execution_options(synchronize_session=False))
    db.session.execute(update(Customer).where(Customer.merged_into_id == duplicate.id)
                       .values(merged_into_id=survivor.id)
                       .execution_options(synchronize_session=False))
    db.session.flush()
    log_automatic(survivor, "merged", duplicate.name,
                  {"merged_id": duplicate.id, "name": duplicate.name}, actor=actor)
    recompute_score(survivor)
    audit("customer.merged", actor, survivor, merged_id=duplicate.id, name=duplicate.name)
    events.publish("customer.merged", {"survivor_id": survivor.id, "merged_id": duplicate.id})
    return survivor


def resolve_customer(customer_id: int | None) -> Customer | None:
    """The live customer an id names, following merges (None when deleted)."""
    for _hop in range(5):
        customer = get_in_organization(Customer, customer_id) if customer_id else None
        if customer is None or customer.merged_into_id is None:
            return customer
        customer_id = customer.merged_into_id
    return None


def customer_by_phone(phone: str | None) -> Customer | None:
    if not phone:
        return None
    return db.session.scalar(select(Customer).where(Customer.phone == phone))


def whatsapp_conversation_id(customer: Customer) -> int | None:
    """The customer's latest WhatsApp conversation (to open it in the inbox); None when the
    WhatsApp module is off or there is none. Reads, never writes, the WhatsApp tables."""
    from crm.permissions import module_enabled
    from crm.whatsapp.models import Conversation

    if not module_enabled("whatsapp"):
        return None
    return db.session.scalar(
        select(Conversation.id).where(Conversation.customer_id == customer.id)
        .order_by(Conversation.last_message_at.desc().nulls_last(), Conversation.id.desc())
        .limit(1))


def touch_contact(customer: Customer, moment: datetime | None = None) -> None:
    """Record a contact (a message, call or meeting) for decay and the `last_contacted` sort."""
    moment = moment or utcnow()
    if customer.last_contacted_at is None or customer.last_contacted_at < moment:
        customer.last_contacted_at = moment


# -- the board -----------------------------------------------------------------------------

def move_customer(actor: User | None, customer: Customer, stage_id: object,
                  before_id: object = None, after_id: object = None) -> Customer:
    """Drop a card on the board: into `stage_id`, directly above the card `before_id` and/or
    directly below the card `after_id` (neither: the top of the column).

    A change of stage logs a stage_changed activity and publishes `customer.stage_changed`;
    every move publishes `customer.moved` for the boards of the rest of the team.
    """
    stage = _check_stage(stage_id)
    if stage is None:
        raise ValidationError({"stage_id": _("Choose a stage of the pipeline.")})
    neighbours = collect({"before_id": lambda: check_id(before_id, "before_id"),
                           "after_id": lambda: check_id(after_id, "after_id")})
    position = _slot(stage.id, customer.id, neighbours["before_id"], neighbours["after_id"])
    previous = customer.stage_id
    if previous != stage.id:
        _change_stage(actor, customer, stage, position)
    else:
        customer.board_position = position
    events.publish("customer.moved", {"customer_id": customer.id, "stage_id": stage.id,
                                      "from_stage_id": previous, "position": position})
    return customer


def _change_stage(actor: User | None, customer: Customer, stage: SalesStage | None,
                  position: float) -> None:
    old = customer.stage
    customer.stage_id = stage.id if stage else None
    customer.stage = stage
    customer.board_position = position
    log_automatic(customer, "stage_changed", data={
        "from_stage_id": old.id if old else None, "to_stage_id": stage.id if stage else None,
        "from_name_ar": old.name_ar if old else "", "from_name_en": old.name_en if old else "",
        "to_name_ar": stage.name_ar if stage else "", "to_name_en": stage.name_en if stage else ""},
        actor=actor)
    recompute_score(customer)
    events.publish("customer.stage_changed", {
        "customer_id": customer.id, "from_stage_id": old.id if old else None,
        "to_stage_id": customer.stage_id})


def _slot(stage_id: int, moving_id: int, before_id: int | None, after_id: int | None) -> float:
    """A board position between the neighbours (renumbering the column when they touch)."""
    for _attempt in range(2):
        above = _position_of(after_id, stage_id, moving_id, "after_id")
        below = _position_of(before_id, stage_id, moving_id, "before_id")
        if above is None and below is None:
            below = _edge(stage_id, moving_id, None, lowest=True)
            return 0.0 if below is None else below - BOARD_STEP
        if below is None:
            below = _edge(stage_id, moving_id, above, lowest=True)
            if below is None:
                return above + BOARD_STEP
        if above is None:
            above = _edge(stage_id, moving_id, below, lowest=False)
            if above is None:
                return below - BOARD_STEP
        if below - above > 1e-6:
            return (above + below) / 2
        _renumber(stage_id)
    raise ValidationError({"before_id": _("These cards are not next to each other.")})


def _position_of(card_id: int | None, stage_id: int, moving_id: int, name: str) -> float | None:
    if card_id is None:
        return None
    position = db.session.scalar(select(Customer.board_position).where(
        Customer.id == card_id, Customer.stage_id == stage_id, Customer.id != moving_id,
        Customer.merged_into_id.is_(None)))
    if position is None:
        raise ValidationError({name: _("Choose a card of this column.")})
    return position


def _edge(stage_id: int, moving_id: int, beyond: float | None, *, lowest: bool) -> float | None:
    """The nearest position below (lowest=True: above) `beyond` in the column."""
    query = select(func.min(Customer.board_position) if lowest
                   else func.max(Customer.board_position)).where(
        Customer.stage_id == stage_id, Customer.id != moving_id,
        Customer.merged_into_id.is_(None))
    if beyond is not None:
        query = query.where(Customer.board_position > beyond if lowest
                            else Customer.board_position < beyond)
    return db.session.scalar(query)


def _renumber(stage_id: int) -> None:
    """Spread a column's positions out again, keeping its order (imports start all at 0)."""
    db.session.execute(text("""
        UPDATE customers c SET board_position = o.n * :step
        FROM (SELECT id, row_number() OVER (ORDER BY board_position, id) AS n
              FROM customers WHERE organization_id = :org AND stage_id = :stage) o
        WHERE c.id = o.id AND c.organization_id = :org"""),
        {"step": BOARD_STEP, "org": current_organization_id(), "stage": stage_id})
    db.session.expire_all()


def stage_counts() -> dict[int | None, int]:
    """How many customers each stage's column holds (one query for the whole board)."""
    return dict(db.session.execute(
        select(Customer.stage_id, func.count()).where(Customer.merged_into_id.is_(None))
        .group_by(Customer.stage_id)).all())


def board_column(stage_id: int | None, after: str | None = None, limit: int = 50
                 ) -> tuple[list[Customer], str | None]:
    """One column of the board, top to bottom, keyset-paginated on (position, id)."""
    query = (select(Customer).options(joinedload(Customer.owner))
             .where(_in_stage(stage_id), Customer.merged_into_id.is_(None)))
    if after:
        position, last_id = _decode_cursor(after, "board", (float, int))
        query = query.where(tuple_(Customer.board_position, Customer.id) > (position, last_id))
    rows = list(db.session.scalars(query.order_by(Customer.board_position, Customer.id)
                                   .limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return rows, (_encode_cursor("board", [last.board_position, last.id]) if last else None)


# -- lists, filters, search ------------------------------------------------------------------

@dataclass(frozen=True)
class CustomerFilters:
    """What a customer list shows: shared by the list page, the API, segments and exports."""

    search: str = ""
    stage_id: int | None = None
    owner_id: int | None = None
    tag: str | None = None
    source: str | None = None
    score_min: int | None = None
    score_max: int | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    sort: str = "newest"

    def as_params(self) -> dict[str, Any]:
        """The filters that are set, as query parameters (and as a segment stores them)."""
        params = {name: getattr(self, name) for name in (
            "search", "stage_id", "owner_id", "tag", "source", "score_min", "score_max")
            if getattr(self, name) not in (None, "")}
        params.update({f"cf_{key}": value for key, value in self.custom.items()})
        if self.sort != "newest":
            params["sort"] = self.sort
        return params


def parse_filters(params: Mapping, *, strict: bool = False) -> CustomerFilters:
    """Read filters from query parameters or a saved segment; 422 on values that make no sense.

    Forms send empty values for "any"; `strict` (the API) refuses them instead, as it refuses
    unknown custom fields.
    """
    def given(name: str) -> bool:
        value = params.get(name)
        if value == "" and strict:
            raise ValidationError({name: _("Enter a value or leave the parameter out.")})
        return value not in (None, "")

    def number(name: str) -> int | None:
        return check_int(params.get(name), name, -SCORE_LIMIT, SCORE_LIMIT) if given(name) \
            else None

    def choice(name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        if not given(name):
            return default
        if params.get(name) not in choices:
            raise ValidationError({name: _("Choose one of the listed options.")})
        return params.get(name)

    values = collect({
        "search": lambda: check_text(params.get("search"), "search", 200),
        "stage_id": lambda: check_id(params.get("stage_id"), "stage_id") if given("stage_id")
        else None,
        "owner_id": lambda: check_id(params.get("owner_id"), "owner_id") if given("owner_id")
        else None,
        "tag": lambda: check_text(params.get("tag"), "tag", 40) or None if given("tag")
        else None,
        "source": lambda: choice("source", SOURCES, None),
        "score_min": lambda: number("score_min"),
        "score_max": lambda: number("score_max"),
        "sort": lambda: choice("sort", SORTS, "newest"),
        "custom": lambda: _custom_filters(params, strict),
    })
    return CustomerFilters(**values)


def _custom_filters(params: Mapping, strict: bool) -> dict[str, Any]:
    keys = [key for key in params if isinstance(key, str) and key.startswith("cf_")]
    if not keys:
        return {}
    definitions = field_definitions_by_key()
    custom, errors = {}, {}
    for name in keys:
        definition = definitions.get(name[3:])
        raw = params.get(name)
        if definition is None or raw in (None, ""):
            if strict:
                errors[name] = _("There is no such custom field.") if definition is None \
                    else _("Enter a value or leave the parameter out.")
            continue
        try:
            custom[definition.key] = check_custom_value(definition, raw, name)
        except ValidationError as exc:
            errors.update(exc.fields)
    if errors:
        raise ValidationError(errors)
    return custom


def _conditions(filters: CustomerFilters) -> list[ColumnElement[bool]]:
    conditions = [Customer.merged_into_id.is_(None)]
    if filters.search:
        conditions.append(_search_condition(filters.search))
    if filters.stage_id is not None:
        conditions.append(Customer.stage_id == filters.stage_id)
    if filters.owner_id is not None:
        conditions.append(Customer.owner_id == filters.owner_id)
    if filters.tag:
        conditions.append(Customer.tags.contains([filters.tag]))
    if filters.source:
        conditions.append(Customer.source == filters.source)
    if filters.score_min is not None:
        conditions.append(Customer.score >= filters.score_min)
    if filters.score_max is not None:
        conditions.append(Customer.score <= filters.score_max)
    if filters.custom:
        conditions.append(Customer.custom_fields.contains(filters.custom))
    return conditions


def _search_condition(term: str) -> ColumnElement[bool]:
    """Name (Arabic letter variants folded), phone in any written form or a fragment of it,
    or email: indexed LIKEs on the columns the database keeps folded, run by a SECURITY
    DEFINER function so that RLS does not keep them off their trigram indexes
    (crm/search.py); this query, under RLS, loads the rows."""
    text_pattern, digit_patterns = search_terms(term, current_organization().country)
    typed = re.sub(r"\D", "", fold_text(term)).lstrip("0")  # 0501234 → …501234…
    if len(typed) >= 3:
        digit_patterns = sorted({*digit_patterns, like_pattern(typed)})
    return Customer.id.in_(select(func.wasl_matching_customers(
        text_pattern, cast(digit_patterns, ARRAY(Text))).column_valued("id")))


_ORDER = {
    "newest": (Customer.id.desc(),),
    "oldest": (Customer.id.asc(),),
    "name": (Customer.name.asc(), Customer.id.asc()),
    "score": (Customer.score.desc(), Customer.id.desc()),
    "last_contacted": (Customer.last_contacted_at.desc().nulls_last(), Customer.id.desc()),
}
_CURSOR_TYPES: dict[str, tuple[type, ...]] = {
    "newest": (int,), "oldest": (int,), "name": (str, int), "score": (int, int),
    "last_contacted": (datetime, int),
}


def filtered_query(filters: CustomerFilters) -> Select:
    """The customers `filters` selects, sorted (campaigns build recipient lists on it)."""
    return select(Customer).where(*_conditions(filters)).order_by(*_ORDER[filters.sort])


def list_customers(filters: CustomerFilters, after: str | None = None, limit: int = 50
                   ) -> tuple[list[Customer], str | None]:
    """A page of customers and the opaque cursor of the next page (None on the last)."""
    query = filtered_query(filters).options(joinedload(Customer.owner),
                                            joinedload(Customer.stage))
    if after:
        query = query.where(_after(filters.sort, _decode_cursor(after, filters.sort,
                                                                _CURSOR_TYPES[filters.sort])))
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_cursor_for(filters.sort, rows[-1]) if more else None)


def _after(sort: str, key: list) -> ColumnElement[bool]:
    if sort == "newest":
        return Customer.id < key[0]
    if sort == "oldest":
        return Customer.id > key[0]
    if sort == "name":
        return tuple_(Customer.name, Customer.id) > tuple_(*key)
    if sort == "score":
        return tuple_(Customer.score, Customer.id) < tuple_(*key)
    moment, last_id = key
    if moment is None:  # among the never-contacted, which come last
        return (Customer.last_contacted_at.is_(None)) & (Customer.id < last_id)
    return or_(Customer.last_contacted_at.is_(None),
               tuple_(Customer.last_contacted_at, Customer.id) < tuple_(moment, last_id))


def _cursor_for(sort: str, customer: Customer) -> str:
    key = {"newest": [], "oldest": [], "name": [customer.name], "score": [customer.score],
           "last_contacted": [customer.last_contacted_at.isoformat()
                              if customer.last_contacted_at else None]}[sort]
    return _encode_cursor(sort, [*key, customer.id])


def _encode_cursor(kind: str, values: list) -> str:
    raw = json.dumps([kind, *values], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(raw: object, kind: str, types: tuple[type, ...]) -> list:
    """Read a cursor of this kind of list; anything else is a 422 on `cursor`."""
    bad = ValidationError({"cursor": _("This cursor is not valid.")})
    if not isinstance(raw, str) or len(raw) > 1000:
        raise bad
    try:
        values = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    if not isinstance(values, list) or len(values) != len(types) + 1 or values[0] != kind:
        raise bad
    key = []
    for value, kind_of in zip(values[1:], types, strict=True):
        key.append(_cursor_value(value, kind_of, bad))
    return key


def _cursor_value(value: object, kind_of: type, bad: ValidationError) -> object:
    if kind_of is int and not isinstance(value, bool) and isinstance(value, int) \
            and -BIGINT_MAX <= value <= BIGINT_MAX:
        return value
    if kind_of is float and isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value):
        return float(value)
    if kind_of is str and isinstance(value, str) and not _CONTROL.search(value):
        return value
    if kind_of is datetime and value is None:
        return None
    if kind_of is datetime and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise bad from None
        if moment.tzinfo is not None:
            return moment
    raise bad


def count_customers(filters: CustomerFilters) -> int:
    """How many customers `filters` selects (a segment's live count)."""
    return db.session.scalar(select(func.count()).select_from(Customer)
                             .where(*_conditions(filters)))


def export_csv(filters: CustomerFilters) -> Iterator[str]:
    """The filtered customers as CSV lines for Excel (UTF-8 with BOM), streamed in pages.

    Cells that a spreadsheet would run as a formula are prefixed with an apostrophe.
    """
    definitions = list_field_definitions()
    stages = {stage.id: stage for stage in list_stages()}
    language = str(get_locale() or "ar")
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: Iterable[object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_spreadsheet_safe(cell) for cell in cells])
        return buffer.getvalue()

    yield "\ufeff" + line([_("Name"), _("Phone"), _("Email"), _("Company"), _("Stage"),
                           _("Owner"), _("Tags"), _("Source"), _("Score"), _("Created"),
                           _("Last contacted"), _("Notes"), *(d.label for d in definitions)])
    cursor = None
    while True:
        rows, cursor = list_customers(filters, cursor, 500)
        for c in rows:
            stage = stages.get(c.stage_id)
            yield line([c.name, c.phone, c.email, c.company,
                        stage.name_in(language) if stage else "",
                        c.owner.email if c.owner else "", ", ".join(c.tags), c.source, c.score,
                        c.created_at.isoformat(), c.last_contacted_at.isoformat()
                        if c.last_contacted_at else "", c.notes,
                        *(c.custom_fields.get(d.key, "") for d in definitions)])
        if cursor is None:
            return


def _spreadsheet_safe(cell: object) -> object:
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return "" if cell is None else cell


# -- activities -----------------------------------------------------------------------------

def access_activity(activity_id: int) -> CustomerActivity:
    activity = get_in_organization(CustomerActivity, activity_id)
    if activity is None:
        raise _not_found()
    return activity


def add_activity(actor: User, customer: Customer, type: object, body: object,
                 due_at: object = None, assignee_id: object = None) -> CustomerActivity:
    """Log a note, call, meeting or task by hand (a task is assigned to its author unless
    someone else is named). A call or meeting counts as contact."""
    values = collect({
        "type": lambda: _check_activity_type(type),
        "body": lambda: check_text(body, "body", 5000, required=True, single_line=False),
        "due_at": lambda: check_datetime(due_at, "due_at"),
        "assignee_id": lambda: _check_assignee(assignee_id),
    })
    if values["type"] == "task" and values["assignee_id"] is None:
        values["assignee_id"] = actor.id
    activity = CustomerActivity(customer_id=customer.id, actor_id=actor.id, **values)
    db.session.add(activity)
    db.session.flush()
    if values["type"] in ("call", "meeting"):
        touch_contact(customer)
    events.publish("customer.activity_added", {"customer_id": customer.id,
                                               "activity_id": activity.id})
    return activity


def _check_activity_type(raw: object) -> str:
    if raw not in ACTIVITY_TYPES:
        raise ValidationError({"type": _("Choose one of the listed options.")})
    return raw


def _check_assignee(raw: object) -> int | None:
    try:
        return _check_owner(raw)
    except ValidationError:
        raise ValidationError({"assignee_id": _("Choose a member of the team.")}) from None


def complete_task(actor: User, activity: CustomerActivity) -> CustomerActivity:
    """Mark a task done (once; marking it again changes nothing)."""
    if activity.type != "task":
        raise ConflictError(_("Only a task can be marked as done."))
    if activity.done_at is None:
        activity.done_at = utcnow()
        events.publish("customer.activity_updated", {"customer_id": activity.customer_id,
                                                     "activity_id": activity.id})
    return activity


def list_activities(customer: Customer, before_id: int | None = None, limit: int = 50
                    ) -> tuple[list[CustomerActivity], int | None]:
    """The timeline, newest first; the second value is the `before_id` of the next page."""
    query = (select(CustomerActivity)
             .options(selectinload(CustomerActivity.actor),
                      selectinload(CustomerActivity.assignee))
             .where(CustomerActivity.customer_id == customer.id)
             .order_by(CustomerActivity.id.desc()).limit(limit + 1))
    if before_id:
        query = query.where(CustomerActivity.id < before_id)
    rows = list(db.session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


def tasks_due_today(user: User, limit: int = 50) -> list[tuple[CustomerActivity, Customer]]:
    """Open tasks assigned to `user` due by the end of today (the organization's day),
    overdue ones first, each with its customer."""
    zone = organization_timezone()
    tomorrow = datetime.combine(datetime.now(zone).date() + timedelta(days=1), time(), zone)
    return [tuple(row) for row in db.session.execute(
        select(CustomerActivity, Customer)
        .join(Customer, Customer.id == CustomerActivity.customer_id)
        .where(CustomerActivity.assignee_id == user.id, CustomerActivity.type == "task",
               CustomerActivity.done_at.is_(None), CustomerActivity.due_at < tomorrow)
        .order_by(CustomerActivity.due_at, CustomerActivity.id).limit(limit))]


def log_automatic(customer: Customer, type: str, body: str = "",
                  data: dict | None = None, source_key: str | None = None,
                  actor: User | None = None) -> CustomerActivity | None:
    """Log what happened by itself (stage changed, a WhatsApp message...). With a
    `source_key` it is logged once however often the event is delivered: None the next times."""
    statement = insert(CustomerActivity).values(
        organization_id=customer.organization_id, customer_id=customer.id, type=type,
        body=body[:5000], data=data or {}, source_key=source_key,
        actor_id=actor.id if actor else None)
    if source_key is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["organization_id", "source_key"],
            index_where=CustomerActivity.source_key.is_not(None))
    activity_id = db.session.execute(statement.returning(CustomerActivity.id)).scalar_one_or_none()
    if activity_id is None:
        return None
    events.publish("customer.activity_added", {"customer_id": customer.id,
                                               "activity_id": activity_id})
    return db.session.get(CustomerActivity, activity_id)


def describe_activity(activity: CustomerActivity) -> str:
    """One line for an automatic entry, in the reader's language ("" for hand-written ones)."""
    data, language = activity.data, str(get_locale() or "ar")
    if activity.type == "stage_changed":
        return _("Moved from %(old)s to %(new)s",
                 old=data.get(f"from_name_{language}") or _("no stage"),
                 new=data.get(f"to_name_{language}") or _("no stage"))
    texts = {
        "created": lambda: _("Created (%(source)s)", source=source_label(data.get("source", ""))),
        "whatsapp_in": lambda: _("WhatsApp message received"),
        "whatsapp_out": lambda: _("WhatsApp message sent"),
        "ticket_opened": lambda: _("Ticket opened"),
        "ticket_closed": lambda: _("Ticket closed"),
        "campaign_sent": lambda: _("Campaign message sent"),
        "campaign_replied": lambda: _("Replied to a campaign"),
        "imported": lambda: _("Imported from a CSV file"),
        "merged": lambda: _("Merged with %(name)s", name=data.get("name", "")),
    }
    return texts[activity.type]() if activity.type in texts else ""


def source_label(source: str) -> str:
    return {"manual": _("added by hand"), "whatsapp": _("WhatsApp"), "import": _("import"),
            "api": _("API")}.get(source, source)


# -- segments ------------------------------------------------------------------------------

def list_segments() -> list[Segment]:
    return list(db.session.scalars(select(Segment).order_by(Segment.name, Segment.id)))


def access_segment(segment_id: int) -> Segment:
    segment = get_in_organization(Segment, segment_id)
    if segment is None:
        raise _not_found()
    return segment


def create_segment(actor: User, name: object, filters: object) -> Segment:
    """Save a filter of the customer list under a name (campaigns send to segments)."""
    values = collect({"name": lambda: check_text(name, "name", 120, required=True),
                       "filters": lambda: _segment_filters(filters)})
    segment = Segment(name=values["name"], filters=values["filters"], created_by_id=actor.id)
    db.session.add(segment)
    db.session.flush()
    audit("segment.created", actor, segment, name=segment.name)
    return segment


def update_segment(actor: User, segment: Segment, name: object = None,
                   filters: object = None) -> Segment:
    """Rename a segment or change its filters (None: unchanged)."""
    checks = {}
    if name is not None:
        checks["name"] = lambda: check_text(name, "name", 120, required=True)
    if filters is not None:
        checks["filters"] = lambda: _segment_filters(filters)
    for key, value in collect(checks).items():
        setattr(segment, key, value)
    audit("segment.updated", actor, segment, name=segment.name)
    return segment


def delete_segment(actor: User, segment: Segment) -> None:
    audit("segment.deleted", actor, segment, name=segment.name)
    db.session.delete(segment)
    db.session.flush()


def _segment_filters(raw: object) -> dict[str, Any]:
    """What a segment stores: checked filters, or a mapping of them (from a form)."""
    if isinstance(raw, Mapping):
        raw = parse_filters(raw)
    if not isinstance(raw, CustomerFilters):
        raise ValidationError({"filters": _("Choose the filters to save.")})
    params = raw.as_params()
    params.pop("sort", None)
    return params


def segment_filters(segment: Segment) -> CustomerFilters:
    """The filters a segment saved (custom fields deleted since are left out)."""
    return parse_filters(segment.filters)


def segment_customers(segment: Segment, after: str | None = None, limit: int = 50
                      ) -> tuple[list[Customer], str | None]:
    """A page of the customers a segment selects now."""
    return list_customers(segment_filters(segment), after, limit)


# -- custom fields ---------------------------------------------------------------------------

def list_field_definitions() -> list[CustomFieldDefinition]:
    return list(db.session.scalars(select(CustomFieldDefinition).order_by(
        CustomFieldDefinition.position, CustomFieldDefinition.id)))


def field_definitions_by_key() -> dict[str, CustomFieldDefinition]:
    return {definition.key: definition for definition in list_field_definitions()}


def access_field(field_id: int) -> CustomFieldDefinition:
    definition = get_in_organization(CustomFieldDefinition, field_id)
    if definition is None:
        raise _not_found()
    return definition


def _check_choices(raw: object) -> list[str]:
    if isinstance(raw, str):
        raw = _TAG_SEPARATORS.split(raw)
    if not isinstance(raw, list | tuple):
        raise ValidationError({"choices": _("List the choices, one per line.")})
    choices = []
    for choice in raw:
        value = check_text(choice, "choices", 80)
        if value and value not in choices:
            choices.append(value)
    if not 1 <= len(choices) <= 50:
        raise ValidationError({"choices": _("List from 1 to 50 choices.")})
    return choices


def create_field_definition(actor: User, data: Mapping) -> CustomFieldDefinition:
    """Define a custom field: key (letters, digits, _), label, type, choices, required."""
    def key() -> str:
        value = data.get("key")
        if not isinstance(value, str) or not _FIELD_KEY.fullmatch(value):
            raise ValidationError({"key": _("Use lower-case letters, digits and _, starting "
                                            "with a letter.")})
        return value

    def field_type() -> str:
        if data.get("type") not in FIELD_TYPES:
            raise ValidationError({"type": _("Choose one of the listed options.")})
        return data["type"]

    values = collect({
        "key": key, "label": lambda: check_text(data.get("label"), "label", 80, required=True),
        "type": field_type, "is_required": lambda: check_bool(data.get("is_required"),
                                                              "is_required")})
    if values["type"] == "choice":
        values["choices"] = _check_choices(data.get("choices"))
    if db.session.scalar(select(CustomFieldDefinition.id).where(
            CustomFieldDefinition.key == values["key"])):
        raise ConflictError(_("A custom field with this key exists."),
                            {"key": _("Already used.")})
    last = db.session.scalar(select(func.max(CustomFieldDefinition.position)))
    definition = CustomFieldDefinition(**values, position=(last or 0) + 1)
    db.session.add(definition)
    db.session.flush()
    audit("custom_field.created", actor, definition, key=definition.key)
    return definition


def update_field_definition(actor: User, definition: CustomFieldDefinition,
                            data: Mapping) -> CustomFieldDefinition:
    """Change a field's label, choices, required flag or position (key and type stay)."""
    checks = {
        "label": lambda: check_text(data.get("label"), "label", 80, required=True),
        "is_required": lambda: check_bool(data.get("is_required"), "is_required"),
        "position": lambda: check_int(data.get("position"), "position", 0, 10_000),
    }
    if definition.type == "choice":
        checks["choices"] = lambda: _check_choices(data.get("choices"))
    for key, value in collect({k: c for k, c in checks.items() if k in data}).items():
        setattr(definition, key, value)
    audit("custom_field.updated", actor, definition, key=definition.key)
    return definition


def delete_field_definition(actor: User, definition: CustomFieldDefinition) -> None:
    """Delete a custom field and its value on every customer."""
    db.session.execute(update(Customer).where(Customer.custom_fields.has_key(definition.key))
                       .values(custom_fields=Customer.custom_fields - definition.key)
                       .execution_options(synchronize_session=False))
    audit("custom_field.deleted", actor, definition, key=definition.key)
    db.session.delete(definition)
    db.session.flush()
    db.session.expire_all()


def check_custom_fields(raw: object, existing: Mapping) -> dict[str, Any]:
    """The custom field values after applying `raw` ({key: value}; empty removes a value) to
    `existing`, each checked against its definition; required fields must end up filled."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValidationError({"custom_fields": _("Enter the custom fields as key and value.")})
    definitions = field_definitions_by_key()
    values, errors = dict(existing), {}
    for key, value in raw.items():
        definition = definitions.get(key)
        if definition is None:
            errors[f"cf_{str(key)[:40]}"] = _("There is no such custom field.")
            continue
        try:
            if value is None or value == "":
                values.pop(key, None)
            else:
                values[key] = check_custom_value(definition, value, f"cf_{key}")
        except ValidationError as exc:
            errors.update(exc.fields)
    for definition in definitions.values():
        if definition.is_required and definition.key not in values \
                and f"cf_{definition.key}" not in errors:
            errors[f"cf_{definition.key}"] = _("This field is required.")
    if errors:
        raise ValidationError(errors)
    return values


def check_custom_value(definition: CustomFieldDefinition, raw: object, name: str) -> Any:
    if definition.type == "number":
        return _number(raw, name)
    if definition.type == "date":
        return _date(raw, name)
    value = check_text(raw, name, 500, required=True)
    if definition.type == "choice" and value not in definition.choices:
        raise ValidationError({name: _("Choose one of the listed options.")})
    return value


def _date(raw: object, name: str) -> str:
    if isinstance(raw, date):
        return raw.isoformat()
    if isinstance(raw, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            pass
    raise ValidationError({name: _("Enter a date as YYYY-MM-DD.")})


def _number(raw: object, name: str) -> int | float:
    """A number from JSON or typed (Arabic digits and decimal sign, thousands commas)."""
    if isinstance(raw, str) and len(raw) <= 40:
        typed = fold_text(raw).replace("٫", ".").replace(",", "").strip()
        raw = float(typed) if re.fullmatch(r"-?\d+(\.\d+)?", typed) else None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) \
            or abs(raw) > 1e15:
        raise ValidationError({name: _("Enter a number.")})
    return int(raw) if float(raw).is_integer() else float(raw)


# -- lead scoring ------------------------------------------------------------------------------

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
    from crm.customers.jobs import rescore_all

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
    from crm.jobs import enqueue

    enqueue(rescore_all)
    return saved


def _check_rule(rule: object, prefix: str) -> dict[str, Any]:
    """One rule of the form: {kind, params, points, is_active}; errors keyed prefix+field."""
    kind = rule.get("kind") if isinstance(rule, Mapping) else None
    if kind not in RULE_KINDS:
        raise ValidationError({f"{prefix}kind": _("Choose one of the listed options.")})
    params = rule.get("params") if isinstance(rule.get("params"), Mapping) else {}
    low = 0 if kind == "decay" else -1000  # decay's points are what each period takes away
    return {"kind": kind, **collect({
        "points": lambda: check_int(rule.get("points"), f"{prefix}points", low, 1000),
        "is_active": lambda: check_bool(rule.get("is_active", True), f"{prefix}is_active"),
        "params": lambda: _rule_params(kind, params, prefix),
    })}


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
    stage = _check_stage(raw, f"{prefix}stage_id")
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
    since = customer.last_contacted_at or customer.created_at or now
    periods = (now - since).days // params["every_days"]
    loss = min(periods * rule.points, params["max"])
    entry.update(points=-loss, detail={**params, "days": (now - since).days})
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
        Customer.created_at, Customer.score, Customer.score_breakdown)
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
    language = str(get_locale() or "ar")
    return [f"{entry['points']:+d} {_reason(entry, language)}"
            for entry in customer.score_breakdown]


def _reason(entry: dict, language: str) -> str:
    detail = entry.get("detail", {})
    reason = entry.get("reason")
    if reason == "replied_recently":
        return _("replied on WhatsApp in the last %(days)d days", days=detail["days"])
    if reason == "message_count":
        return _("sent at least %(n)d WhatsApp messages", n=detail["min"])
    if reason == "ticket_opened":
        return _("opened a ticket in the last %(days)d days", days=detail["days"])
    if reason == "stage_reached":
        return _("reached the stage %(stage)s", stage=detail.get(f"name_{language}", ""))
    if reason == "custom_field":
        return _("%(field)s is %(value)s", field=detail.get("label"), value=detail.get("value"))
    if reason == "decay":
        return _("no contact for %(days)d days", days=detail.get("days", 0))
    return str(reason)


def describe_rule(rule: ScoringRule) -> str:
    """An admin's reading of a rule ("+20 replied on WhatsApp in the last 7 days")."""
    if rule.kind == "decay":
        return _("-%(points)d every %(days)d days without contact (at most -%(max)d)",
                 points=rule.points, days=rule.params["every_days"], max=rule.params["max"])
    language = str(get_locale() or "ar")
    detail = dict(rule.params)
    if rule.kind == "stage_reached":
        stage = get_in_organization(SalesStage, rule.params["stage_id"])
        detail.update(name_ar=stage.name_ar if stage else "", name_en=stage.name_en
                      if stage else "")
    return f"{rule.points:+d} {_reason({'reason': rule.kind, 'detail': detail}, language)}"


# -- imports ------------------------------------------------------------------------------------

def access_import(import_id: int) -> CustomerImport:
    imp = get_in_organization(CustomerImport, import_id)
    if imp is None:
        raise _not_found()
    return imp


def list_imports(limit: int = 20) -> list[CustomerImport]:
    return list(db.session.scalars(select(CustomerImport).order_by(CustomerImport.id.desc())
                                   .limit(limit)))


def import_directory() -> Path:
    """Where this organization's uploads and reports live (the path carries the organization)."""
    path = Path(current_app.config["INSTANCE_PATH"]) / "imports" / str(current_organization_id())
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_csv(path: str | Path) -> Iterator[list[str]]:
    """Rows of a CSV file, streamed: UTF-8 with or without Excel's BOM, comma, semicolon or
    tab separated (the separator is guessed from the header line)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
        counts = {sep: first.count(sep) for sep in (",", ";", "\t")}
        delimiter = max(counts, key=counts.get) if any(counts.values()) else ","
        handle.seek(0)  # the decoder starts over, so a BOM is skipped again
        yield from csv.reader(handle, delimiter=delimiter)


def import_columns(header: list[str]) -> list[str]:
    """The header's column names, blanks named and repeats numbered, so each is a unique key."""
    columns: list[str] = []
    for index, name in enumerate(header):
        name = " ".join(name.split())[:100] or _("Column %(n)d", n=index + 1)
        candidate, n = name, 2
        while candidate in columns:
            candidate, n = f"{name} ({n})", n + 1
        columns.append(candidate)
    return columns


def start_import(actor: User, upload: Any) -> CustomerImport:
    """Store an uploaded CSV file and check that its header and first rows can be read."""
    filename = check_text(getattr(upload, "filename", "") or "", "file", 255)
    if not filename:
        raise ValidationError({"file": _("Choose a CSV file.")})
    if not filename.lower().endswith((".csv", ".txt")):
        raise ValidationError({"file": _("Upload a CSV file (in Excel: Save as, CSV UTF-8).")})
    path = import_directory() / f"{uuid.uuid4().hex}.csv"
    size = 0
    with open(path, "wb") as target:
        while chunk := upload.stream.read(1024 * 1024):
            size += len(chunk)
            if size > IMPORT_MAX_BYTES:
                target.close()
                path.unlink(missing_ok=True)
                raise ValidationError({"file": _("The file is too large: at most %(mb)d MB.",
                                                 mb=IMPORT_MAX_BYTES // (1024 * 1024))})
            target.write(chunk)
    imp = CustomerImport(filename=filename, path=str(path), created_by_id=actor.id)
    try:
        columns, _rows = _read_preview(imp)
    except ValidationError:
        path.unlink(missing_ok=True)
        raise
    imp.mapping = suggest_mapping(columns)
    db.session.add(imp)
    db.session.flush()
    audit("customer_import.uploaded", actor, imp, filename=imp.filename)
    return imp


def _read_preview(imp: CustomerImport) -> tuple[list[str], list[list[str]]]:
    rows = open_csv(imp.path)
    try:
        header = next(rows, None)
        preview = [row for _n, row in zip(range(IMPORT_PREVIEW_ROWS), rows, strict=False)]
    except UnicodeDecodeError:
        raise ValidationError({"file": _("Save the file as CSV UTF-8 and upload it again.")}
                              ) from None
    except csv.Error:
        raise ValidationError({"file": _("This file could not be read as CSV.")}) from None
    finally:
        rows.close()
    if not header or not any(cell.strip() for cell in header):
        raise ValidationError({"file": _("The file is empty: its first line must name the "
                                         "columns.")})
    return import_columns(header), preview


def preview_import(imp: CustomerImport) -> tuple[list[str], list[list[str]]]:
    """The file's column names and first rows, to map columns to fields."""
    return _read_preview(imp)


_COLUMN_HINTS = {
    "name": ("name", "full name", "customer", "contact", "الاسم", "اسم", "العميل", "الاسم الكامل"),
    "phone": ("phone", "mobile", "whatsapp", "tel", "telephone", "الجوال", "الهاتف", "رقم الجوال",
              "رقم الهاتف", "واتساب", "جوال"),
    "email": ("email", "e-mail", "mail", "البريد", "البريد الالكتروني", "الايميل"),
    "company": ("company", "organization", "organisation", "الشركه", "المؤسسه", "الجهه"),
    "tags": ("tags", "labels", "الوسوم", "التصنيفات"),
    "notes": ("notes", "note", "ملاحظات"),
    "stage": ("stage", "status", "المرحله", "الحاله"),
    "owner": ("owner", "المسؤول"),
}


def import_targets() -> dict[str, str]:
    """What a column can be imported as: field → label (custom fields as `cf:<key>`)."""
    labels = {"name": _("Name"), "phone": _("Phone"), "email": _("Email"),
              "company": _("Company"), "tags": _("Tags"), "notes": _("Notes"),
              "stage": _("Stage (by name)"), "owner": _("Owner (by email)")}
    labels.update({f"cf:{d.key}": d.label for d in list_field_definitions()})
    return labels


def suggest_mapping(columns: list[str]) -> dict[str, str]:
    """A first guess of the mapping from the column names, in Arabic or English."""
    mapping, used = {}, set()
    for column in columns:
        folded = fold_text(column).strip()
        target = next((t for t, hints in _COLUMN_HINTS.items()
                       if folded in hints and t not in used), "")
        mapping[column] = target
        used.add(target)
    return mapping


def configure_import(actor: User, imp: CustomerImport, mapping: object,
                     on_duplicate: object) -> CustomerImport:
    """Map columns to fields, choose what a duplicate does (update or skip), start the job."""
    from crm.customers.jobs import run_import
    from crm.jobs import enqueue

    if imp.status != "uploaded":
        raise ConflictError(_("This import has already started."))
    columns, _rows = _read_preview(imp)
    values = collect({"mapping": lambda: _check_mapping(mapping, columns),
                       "on_duplicate": lambda: _check_on_duplicate(on_duplicate)})
    imp.mapping, imp.on_duplicate = values["mapping"], values["on_duplicate"]
    imp.status = "queued"
    audit("customer_import.started", actor, imp, on_duplicate=imp.on_duplicate)
    enqueue(run_import, imp.id)
    return imp


def resume_import(actor: User, imp: CustomerImport) -> CustomerImport:
    """Run a failed import again: it continues after the last row it saved."""
    from crm.customers.jobs import run_import
    from crm.jobs import enqueue

    if imp.status != "failed":
        raise ConflictError(_("Only a failed import can be resumed."))
    imp.status, imp.error = "queued", None
    audit("customer_import.resumed", actor, imp)
    enqueue(run_import, imp.id)
    return imp


def _check_on_duplicate(raw: object) -> str:
    if raw not in ("update", "skip"):
        raise ValidationError({"on_duplicate": _("Choose one of the listed options.")})
    return raw


def _check_mapping(raw: object, columns: list[str]) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValidationError({"mapping": _("Choose a field for the columns to import.")})
    targets = import_targets()
    mapping, used, errors = {}, set(), {}
    for column in columns:
        target = raw.get(column) or ""
        if target and (target not in targets or target in used):
            errors[f"mapping-{columns.index(column)}"] = _(
                "Choose a field not chosen for another column.")
        used.add(target)
        mapping[column] = target
    if errors:
        raise ValidationError(errors)
    if not used & {"name", "phone", "email"}:
        raise ValidationError({"mapping": _("Map at least the name, phone or email column.")})
    return mapping


def import_report_path(imp: CustomerImport) -> Path | None:
    """The CSV of rejected rows with their reasons, once there is one."""
    if not imp.report_path:
        return None
    path = Path(imp.report_path)
    return path if path.is_file() else None
