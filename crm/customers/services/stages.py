"""The pipeline's stages: the defaults a new organization gets, and the admins' edits.

A deleted stage's customers move to the first remaining stage (a stage_changed activity
each); the last stage cannot be deleted. Scoring rules about that stage go with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import delete, func, select, text, update

from crm import events
from crm.customers.models import Customer, SalesStage, ScoringRule
from crm.customers.services.fields import check_bool, check_id, check_text, not_found
from crm.customers.services.nightly import keep_nightly_rescore
from crm.errors import ConflictError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.tenancy import current_organization_id, get_in_organization
from crm.validation import collect
from crm.versions import edit_values

_COLOR = re.compile(r"#[0-9a-fA-F]{6}")

DEFAULT_STAGES = (  # (Arabic, English, colour, won, lost)
    ("عميل محتمل", "New lead", "#64748b", False, False),
    ("تم التواصل", "Contacted", "#0ea5e9", False, False),
    ("مؤهل", "Qualified", "#8b5cf6", False, False),
    ("عرض سعر", "Proposal", "#f59e0b", False, False),
    ("تم الفوز", "Won", "#16a34a", True, False),
    ("خسارة", "Lost", "#dc2626", False, True),
)


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


def check_stage(raw: object, field_name: str = "stage_id") -> SalesStage | None:
    stage_id = check_id(raw, field_name)
    if stage_id is None:
        return None
    stage = get_in_organization(SalesStage, stage_id)
    if stage is None:
        raise ValidationError({field_name: _("Choose a stage of the pipeline.")})
    return stage
