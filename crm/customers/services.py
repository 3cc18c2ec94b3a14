"""The CRM's core: customers, the pipeline and its board, lists and their filters, the
activity timeline, segments and custom fields. Lead scoring is in crm/customers/scoring.py,
CSV import and export in crm/customers/imports.py; both build on the validation here.

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
- A WhatsApp message on the timeline shows its text only to those who may read its
  conversation: agents read the conversations assigned to them (the inbox's rule); to them the
  entry of another conversation's message stays, type and time, with its text hidden.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Text,
    cast,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased, joinedload, selectinload
from sqlalchemy.sql import ColumnElement, Select

from crm import events
from crm.customers.models import (
    ACTIVITY_TYPES,
    FIELD_TYPES,
    MESSAGE_ACTIVITY_TYPES,
    SOURCES,
    Customer,
    CustomerActivity,
    CustomFieldDefinition,
    SalesStage,
    ScoringRule,
    Segment,
)
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit, current_organization, normalize_email
from crm.i18n import isolate
from crm.models import utcnow
from crm.pagination import keyset_page
from crm.permissions import sees_only_assigned
from crm.search import fold_text, normalize_phone, search_terms
from crm.tenancy import current_organization_id, get_in_organization
from crm.text import has_control_characters
from crm.versions import Expected, check_version, edit_values, lock_for_edit, record_edit

log = logging.getLogger("crm.customers")

BIGINT_MAX = 2**63 - 1
SCORE_LIMIT = 1_000_000
MAX_TAGS = 20
SORTS = ("newest", "oldest", "name", "score", "last_contacted")
# A paged search first reads this many customers per row of the page in the list's order (an
# index scan), before it asks the GIN indexes for rarer matches (crm/search.py).
PAGE_SCAN = 100
BOARD_STEP = 1024.0
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
                           "email.", name=isolate(existing.name), id=existing.id), fields)
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
    if has_control_characters(raw):
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


def not_found() -> NotFoundError:
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
        raise not_found()
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
                       .values(stage_id=target.id, **edit_values(Customer, actor))
                       .execution_options(synchronize_session=False))
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

def _rescore(customer: Customer) -> None:
    """Score the customer again after a change that rules may count (a stage, a field)."""
    from crm.customers.scoring import recompute_score  # scoring builds on this module

    recompute_score(customer)


def access_customer(customer_id: int) -> Customer:
    """The organization's customer with this id, or 404 (merged duplicates too)."""
    customer = get_in_organization(Customer, customer_id)
    if customer is None:
        raise not_found()
    if customer.merged_into_id is not None:
        raise not_found()
    return customer


def _check_owner(raw: object) -> int | None:
    owner_id = check_id(raw, "owner_id")
    if owner_id is None:
        return None
    owner = get_in_organization(User, owner_id)
    if owner is None or not owner.is_active:
        raise ValidationError({"owner_id": _("Choose a member of the team.")})
    return owner.id


def check_stage(raw: object, field_name: str = "stage_id") -> SalesStage | None:
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
        "stage_id": lambda: check_stage(data.get("stage_id")),
        "tags": lambda: check_tags(data.get("tags")),
        "notes": lambda: check_text(data.get("notes"), "notes", 10_000, single_line=False),
        "custom_fields": lambda: check_custom_fields(
            data.get("custom_fields"), customer.custom_fields if customer else {}),
    }
    always = ("name", "custom_fields") if customer is None else ()
    chosen = {key: check for key, check in checks.items() if key in data or key in always}
    if customer is not None and ("add_tags" in data or "remove_tags" in data):
        chosen["tags"] = lambda: _edited_tags(data, customer.tags)
    return collect(chosen)


def _edited_tags(data: Mapping, current: list[str]) -> list[str]:
    """`current` with data's `remove_tags` taken out and its `add_tags` put in (a tag already
    there, however written, is not added twice). Applied to the tags as saved now, they keep
    what others added since the editor read them, as a whole list could not."""
    if "tags" in data:
        raise ValidationError({"tags": _("Send the whole list of tags, or tags to add and "
                                         "remove, not both.")})
    changes = collect({name: lambda name=name: check_tags(data.get(name), name)
                       for name in ("add_tags", "remove_tags")})
    removed = {fold_text(tag) for tag in changes["remove_tags"]}
    tags = [tag for tag in current if fold_text(tag) not in removed]
    present = {fold_text(tag) for tag in tags}
    tags += [tag for tag in changes["add_tags"] if fold_text(tag) not in present]
    if len(tags) > MAX_TAGS:
        raise ValidationError({"add_tags": _("Use at most %(n)d tags.", n=MAX_TAGS)})
    return tags


def tag_changes(shown: object, typed: object) -> dict[str, list[str]]:
    """The tags to add and remove that turn the tags a form showed into those typed in it, so
    that saving the form keeps the tags someone else added meanwhile."""
    values = collect({"shown": lambda: check_tags(shown), "typed": lambda: check_tags(typed)})
    before = {fold_text(tag) for tag in values["shown"]}
    after = {fold_text(tag) for tag in values["typed"]}
    return {"add_tags": [tag for tag in values["typed"] if fold_text(tag) not in before],
            "remove_tags": [tag for tag in values["shown"] if fold_text(tag) not in after]}


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
        message = _("%(name)s (customer #%(id)d) already has it.", name=isolate(other.name),
                    id=other.id)
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
    _rescore(customer)
    log.info("customer %s created by %s (%s)", customer.id, actor, source)
    events.publish("customer.created", {"customer_id": customer.id, "source": source})
    return customer


def update_customer(actor: User | None, customer: Customer, data: Mapping,
                    expected_version: Expected = None) -> Customer:
    """Change the keys present in `data`; a new stage_id moves the customer on the board.
    `add_tags` and `remove_tags` change the tags as saved now.

    With `expected_version`, a customer someone edited since is refused (StaleVersionError);
    the edit is checked and made on the customer as saved now, never on a copy read earlier.
    """
    lock_for_edit(customer)
    values = _customer_values(data, customer)
    check_version(customer, expected_version)
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
        _rescore(customer)
    if changed:
        record_edit(customer, actor)
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
    # Locked and read afresh: what is merged is what both hold now.
    db.session.scalars(select(Customer).where(Customer.id.in_((survivor.id, duplicate.id)))
                       .order_by(Customer.id).with_for_update()
                       .execution_options(populate_existing=True)).all()
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
    record_edit(survivor, actor)
    log_automatic(survivor, "merged", duplicate.name,
                  {"merged_id": duplicate.id, "name": duplicate.name}, actor=actor)
    _rescore(survivor)
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
    stage = check_stage(stage_id)
    if stage is None:
        raise ValidationError({"stage_id": _("Choose a stage of the pipeline.")})
    neighbours = collect({"before_id": lambda: check_id(before_id, "before_id"),
                           "after_id": lambda: check_id(after_id, "after_id")})
    position = _slot(stage.id, customer.id, neighbours["before_id"], neighbours["after_id"])
    previous = customer.stage_id
    if previous != stage.id:  # another stage is an edit; a new place in the column is not
        _change_stage(actor, customer, stage, position)
        record_edit(customer, actor)
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
    _rescore(customer)
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


def board_columns(stage_ids: list[int], limit: int = 50
                  ) -> dict[int, tuple[list[Customer], str | None]]:
    """The first page of several columns in one query (a LATERAL scan of each column's
    index): six columns of the board cost one statement, not six to plan and send."""
    stages = select(SalesStage.id).where(SalesStage.id.in_(stage_ids)).subquery()
    cards = (select(Customer).where(Customer.stage_id == stages.c.id,
                                    Customer.merged_into_id.is_(None))
             .order_by(Customer.board_position, Customer.id).limit(limit + 1).lateral())
    columns: dict[int, list[Customer]] = {stage_id: [] for stage_id in stage_ids}
    for customer in db.session.scalars(select(aliased(Customer, cards))
                                       .select_from(stages).join(cards, true())):
        columns[customer.stage_id].append(customer)
    return {stage_id: _board_page(rows, limit) for stage_id, rows in columns.items()}


def _board_page(rows: list[Customer], limit: int) -> tuple[list[Customer], str | None]:
    """A column's page from `limit` + 1 rows in board order, and the cursor after it."""
    rows.sort(key=lambda c: (c.board_position, c.id))
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], (_encode_cursor("board", [last.board_position, last.id])
                          if last else None)


def board_column(stage_id: int | None, after: str | None = None, limit: int = 50
                 ) -> tuple[list[Customer], str | None]:
    """One column of the board, top to bottom, keyset-paginated on (position, id)."""
    query = (select(Customer).options(joinedload(Customer.owner))
             .where(_in_stage(stage_id), Customer.merged_into_id.is_(None)))
    if after:
        position, last_id = _decode_cursor(after, "board", (float, int))
        query = query.where(tuple_(Customer.board_position, Customer.id) > (position, last_id))
    return _board_page(list(db.session.scalars(
        query.order_by(Customer.board_position, Customer.id).limit(limit + 1))), limit)


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


def _conditions(filters: CustomerFilters, page: tuple[list | None, int] | None = None
                ) -> list[ColumnElement[bool]]:
    """The WHERE of a list; `page` (cursor key, rows) asks the search function for that page
    of the list's order only."""
    conditions = [Customer.merged_into_id.is_(None)]
    if filters.search or filters.tag:
        conditions.append(Customer.id.in_(select(_matching(filters, page).column_valued("id"))))
    if filters.stage_id is not None:
        conditions.append(Customer.stage_id == filters.stage_id)
    if filters.owner_id is not None:
        conditions.append(Customer.owner_id == filters.owner_id)
    if filters.source:
        conditions.append(Customer.source == filters.source)
    if filters.score_min is not None:
        conditions.append(Customer.score >= filters.score_min)
    if filters.score_max is not None:
        conditions.append(Customer.score <= filters.score_max)
    if filters.custom:
        conditions.append(Customer.custom_fields.contains(filters.custom))
    return conditions


def _matching(filters: CustomerFilters, page: tuple[list | None, int] | None):
    """The ids a search or tag filter selects, with every other filter applied.

    Search: name (Arabic letter variants folded), phone in any written form or a fragment of
    it, or email. LIKE and `@>` are not LEAKPROOF, so under RLS they could not use their GIN
    indexes: a SECURITY DEFINER function (crm/search.py `wasl_customer_page`) runs them,
    filtered by the transaction's organization, and this query, under RLS, loads the rows.
    Given `page`, the function returns only that page of the list's order.
    """
    text_pattern, digit_patterns = (None, [])
    if filters.search:
        text_pattern, digit_patterns = search_terms(filters.search,
                                                    current_organization().country)
    key, rows = page or (None, None)
    after = dict(zip(_CURSOR_FIELDS[filters.sort], key or [], strict=False))
    return func.wasl_customer_page(
        cast(text_pattern, Text), cast(digit_patterns, ARRAY(Text)), cast(filters.tag, Text),
        cast(filters.stage_id, BigInteger), cast(filters.owner_id, BigInteger),
        cast(filters.source, Text), cast(filters.score_min, Integer),
        cast(filters.score_max, Integer), cast(filters.custom or None, JSONB(none_as_null=True)),
        cast(filters.sort if page else None, Text), cast(key[-1] if key else None, BigInteger),
        cast(after.get("score"), Integer), cast(after.get("name"), Text),
        cast(after.get("contacted"), DateTime(timezone=True)), cast(rows, Integer),
        cast(rows * PAGE_SCAN if rows else None, Integer))


# Never contacted sorts last, as -infinity: one expression, which ix_customers_contacted holds,
# orders and pages the list (a NULLS LAST order would need an OR after the cursor).
_NEVER = literal_column("'-infinity'::timestamptz")
_CONTACTED = func.coalesce(Customer.last_contacted_at, _NEVER)
_ORDER = {
    "newest": (Customer.id.desc(),),
    "oldest": (Customer.id.asc(),),
    "name": (Customer.name.asc(), Customer.id.asc()),
    "score": (Customer.score.desc(), Customer.id.desc()),
    "last_contacted": (_CONTACTED.desc(), Customer.id.desc()),
}
_CURSOR_TYPES: dict[str, tuple[type, ...]] = {
    "newest": (int,), "oldest": (int,), "name": (str, int), "score": (int, int),
    "last_contacted": (datetime, int),
}
# What the search function takes from a cursor, besides the id (crm/search.py).
_CURSOR_FIELDS = {"newest": (), "oldest": (), "name": ("name",), "score": ("score",),
                  "last_contacted": ("contacted",)}


def filtered_query(filters: CustomerFilters) -> Select:
    """The customers `filters` selects, sorted (campaigns build recipient lists on it)."""
    return select(Customer).where(*_conditions(filters)).order_by(*_ORDER[filters.sort])


def list_customers(filters: CustomerFilters, after: str | None = None, limit: int = 50
                   ) -> tuple[list[Customer], str | None]:
    """A page of customers and the opaque cursor of the next page (None on the last)."""
    key = _decode_cursor(after, filters.sort, _CURSOR_TYPES[filters.sort]) if after else None
    query = (select(Customer).where(*_conditions(filters, (key, limit + 1)))
             .order_by(*_ORDER[filters.sort])
             .options(joinedload(Customer.owner), joinedload(Customer.stage)))
    if key:
        query = query.where(_after(filters.sort, key))
    return keyset_page(query, limit, lambda last: _cursor_for(filters.sort, last))


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
    return tuple_(_CONTACTED, Customer.id) < tuple_(
        func.coalesce(cast(moment, DateTime(timezone=True)), _NEVER), last_id)


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
    if kind_of is str and isinstance(value, str) and not has_control_characters(value):
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


# -- activities -----------------------------------------------------------------------------

def access_activity(activity_id: int) -> CustomerActivity:
    activity = get_in_organization(CustomerActivity, activity_id)
    if activity is None:
        raise not_found()
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
             .order_by(CustomerActivity.id.desc()))
    if before_id:
        query = query.where(CustomerActivity.id < before_id)
    return keyset_page(query, limit, attrgetter("id"))


def readable_messages(activities: list[CustomerActivity], reader: User) -> frozenset[int]:
    """The ids of the WhatsApp messages among `activities` whose text `reader` may read.

    Agents read a message only while its conversation is assigned to them, as in the inbox;
    everyone else reads them all. One query for a whole page of the timeline.
    """
    messages = {activity.id: activity.data.get("conversation_id")
                for activity in activities if activity.type in MESSAGE_ACTIVITY_TYPES}
    if not messages or not sees_only_assigned():
        return frozenset(messages)
    from crm.whatsapp.models import Conversation

    assigned = set(db.session.scalars(select(Conversation.id).where(
        Conversation.id.in_({c for c in messages.values() if isinstance(c, int)}),
        Conversation.assigned_user_id == reader.id)))
    return frozenset(activity_id for activity_id, conversation_id in messages.items()
                     if conversation_id in assigned)


def text_hidden(activity: CustomerActivity, readable: frozenset[int]) -> bool:
    """Is `activity` a message whose text is not among the `readable_messages()`? Anything
    not known to be readable is hidden, so a page that forgets to ask shows no message."""
    return activity.type in MESSAGE_ACTIVITY_TYPES and activity.id not in readable


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
                 old=isolate(data.get(f"from_name_{language}") or _("no stage")),
                 new=isolate(data.get(f"to_name_{language}") or _("no stage")))
    texts = {
        "created": lambda: _("Created (%(source)s)", source=source_label(data.get("source", ""))),
        "whatsapp_in": lambda: _("WhatsApp message received"),
        "whatsapp_out": lambda: _("WhatsApp message sent"),
        "ticket_opened": lambda: _("Ticket opened"),
        "ticket_closed": lambda: _("Ticket closed"),
        "campaign_sent": lambda: _("Campaign message sent"),
        "campaign_replied": lambda: _("Replied to a campaign"),
        "imported": lambda: _("Imported from a CSV file"),
        "merged": lambda: _("Merged with %(name)s", name=isolate(data.get("name", ""))),
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
        raise not_found()
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
        raise not_found()
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


