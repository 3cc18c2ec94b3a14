"""The CRM's settings pages: the pipeline's stages, custom fields and lead scoring.

Admins only (settings:write), and only while the CRM is on. Their routes join the customers
blueprint of crm/customers/views.py, under /customers/settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import flash, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from crm.customers import services
from crm.customers.services import scoring
from crm.customers.views import FIELD_TYPE_LABELS, blueprint, board_move, stage_choices
from crm.errors import ConflictError, ValidationError
from crm.i18n import current_language, isolate
from crm.permissions import require_settings
from crm.web import me, see_other

RULE_LABELS = {"replied_recently": lazy_gettext("Replied on WhatsApp recently"),
               "message_count": lazy_gettext("Sent many WhatsApp messages"),
               "stage_reached": lazy_gettext("Reached a stage"),
               "ticket_opened": lazy_gettext("Opened a ticket recently"),
               "custom_field": lazy_gettext("A custom field has a value"),
               "decay": lazy_gettext("No contact for a while (points taken away)")}
# The parameters of each kind of scoring rule, as the form names them.
RULE_PARAMS = {"replied_recently": ("days",), "ticket_opened": ("days",),
               "message_count": ("min",), "stage_reached": ("stage_id",),
               "custom_field": ("key", "value"), "decay": ("every_days", "max")}
RULE_DEFAULTS = {"replied_recently": {"days": 7}, "ticket_opened": {"days": 30},
                 "message_count": {"min": 5}, "stage_reached": {}, "custom_field": {},
                 "decay": {"every_days": 7, "max": 30}}
PARAM_LABELS = {"days": lazy_gettext("Within (days)"), "min": lazy_gettext("At least (messages)"),
                "stage_id": lazy_gettext("Stage"), "key": lazy_gettext("Field"),
                "value": lazy_gettext("Value"), "every_days": lazy_gettext("Every (days)"),
                "max": lazy_gettext("At most (points)")}


# A CRM settings page: admins only (settings:write), and only while the CRM is on.
crm_setting = require_settings("crm")


# -- settings: stages -------------------------------------------------------------------------

def _stage_page(status: int = 200, **context) -> tuple[str, int]:
    context.setdefault("new_errors", {})
    context.setdefault("new_values", {})
    context.setdefault("row_errors", {})
    return render_template("customers/settings_stages.html", stages=services.list_stages(),
                           **context), status


def _stage_data(form: Mapping) -> dict[str, Any]:
    """A stage form; an unticked checkbox is not posted, and means no."""
    return {"name_ar": form.get("name_ar"), "name_en": form.get("name_en"),
            "color": form.get("color"), "is_won": form.get("is_won", ""),
            "is_lost": form.get("is_lost", "")}


@blueprint.get("/settings/stages")
@crm_setting
def stage_settings():
    return _stage_page()


@blueprint.post("/settings/stages")
@crm_setting
def create_stage():
    try:
        stage = services.create_stage(me(), _stage_data(request.form))
    except ValidationError as exc:
        return _stage_page(422, new_errors=exc.fields, new_values=request.form,
                           new_error=exc.message)
    flash(_("The stage %(name)s was added.", name=isolate(stage.name_in(current_language()))),
          "success")
    return see_other("customers.stage_settings")


@blueprint.post("/settings/stages/order")
@crm_setting
@board_move("customers.stage_settings")
def reorder_stages():
    services.reorder_stages(me(), request.form.getlist("stage_ids"))
    return "", 204


@blueprint.post("/settings/stages/<int:stage_id>")
@crm_setting
def update_stage(stage_id: int):
    stage = services.access_stage(stage_id)
    try:
        services.update_stage(me(), stage, _stage_data(request.form))
    except ValidationError as exc:
        return _stage_page(422, error_id=stage.id, row_errors=exc.fields,
                           row_values=request.form)
    flash(_("The stage %(name)s was saved.", name=isolate(stage.name_in(current_language()))),
          "success")
    return see_other("customers.stage_settings")


@blueprint.post("/settings/stages/<int:stage_id>/delete")
@crm_setting
def delete_stage(stage_id: int):
    stage = services.access_stage(stage_id)
    name = stage.name_in(current_language())
    try:
        services.delete_stage(me(), stage)
    except ConflictError as exc:
        flash(exc.message, "error")
        return see_other("customers.stage_settings")
    flash(_("The stage %(name)s was deleted.", name=isolate(name)), "success")
    return see_other("customers.stage_settings")


# -- settings: custom fields ------------------------------------------------------------------

def _field_page(status: int = 200, **context) -> tuple[str, int]:
    context.setdefault("new_errors", {})
    context.setdefault("new_values", {})
    context.setdefault("row_errors", {})
    return render_template("customers/settings_fields.html",
                           definitions=services.list_field_definitions(),
                           field_type_choices=list(FIELD_TYPE_LABELS.items()), **context), status


@blueprint.get("/settings/fields")
@crm_setting
def field_settings():
    return _field_page()


@blueprint.post("/settings/fields")
@crm_setting
def create_field():
    form = request.form
    data = {key: form.get(key, "") for key in ("key", "label", "type", "choices", "is_required")}
    try:
        definition = services.create_field_definition(me(), data)
    except (ValidationError, ConflictError) as exc:
        return _field_page(exc.status, new_errors=exc.fields, new_values=form,
                           new_error=exc.message)
    flash(_("The field %(label)s was added.", label=isolate(definition.label)), "success")
    return see_other("customers.field_settings")


@blueprint.post("/settings/fields/<int:field_id>")
@crm_setting
def update_field(field_id: int):
    definition = services.access_field(field_id)
    form = request.form
    data = {"label": form.get("label"), "is_required": form.get("is_required", "")}
    if definition.type == "choice":
        data["choices"] = form.get("choices", "")
    try:
        services.update_field_definition(me(), definition, data)
    except ValidationError as exc:
        return _field_page(422, error_id=definition.id, row_errors=exc.fields, row_values=form)
    flash(_("The field %(label)s was saved.", label=isolate(definition.label)), "success")
    return see_other("customers.field_settings")


@blueprint.post("/settings/fields/<int:field_id>/delete")
@crm_setting
def delete_field(field_id: int):
    definition = services.access_field(field_id)
    label = definition.label
    services.delete_field_definition(me(), definition)
    flash(_("The field %(label)s was deleted.", label=isolate(label)), "success")
    return see_other("customers.field_settings")


# -- settings: lead scoring -------------------------------------------------------------------

def _rule_rows(rules: list) -> list[dict[str, Any]]:
    """Saved rules as the form's rows."""
    return [{"kind": rule.kind, "points": rule.points, "is_active": rule.is_active,
             **rule.params, "reading": scoring.describe_rule(rule)} for rule in rules]


def _posted_rules(form: Mapping) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """The rows the scoring form posted (to show again), the rules to save (rows not marked
    for removal) and, for each rule, the number of its row."""
    rows, rules, numbers = [], [], []
    index = 0
    while (kind := form.get(f"rules-{index}-kind")) is not None:
        prefix = f"rules-{index}-"
        row = {name.removeprefix(prefix): value for name, value in form.items()
               if name.startswith(prefix)}
        rows.append(row)
        if not row.get("remove"):
            params = {name: row.get(name, "") for name in RULE_PARAMS.get(kind, ())}
            rules.append({"kind": kind, "points": row.get("points", ""),
                          "is_active": row.get("is_active", ""), "params": params})
            numbers.append(index)
        index += 1
    return rows, rules, numbers


def _renumbered(errors: Mapping[str, str], numbers: list[int]) -> dict[str, str]:
    """Errors of the n-th saved rule ("rules-n-points") named after its row in the form."""
    renamed = {}
    for name, message in errors.items():
        parts = name.split("-", 2)
        if len(parts) == 3 and parts[0] == "rules" and parts[1].isdigit():
            name = f"rules-{numbers[int(parts[1])]}-{parts[2]}"
        renamed[name] = message
    return renamed


def _scoring_page(rows: list[dict[str, Any]], status: int = 200, **context) -> tuple[str, int]:
    definitions = services.list_field_definitions()
    return render_template(
        "customers/settings_scoring.html", rows=rows, rule_params=RULE_PARAMS,
        rule_labels=RULE_LABELS, param_labels=PARAM_LABELS,
        kind_choices=list(RULE_LABELS.items()), stage_choices=stage_choices(),
        field_choices=[(d.key, d.label) for d in definitions],
        errors=context.pop("errors", {}), **context), status


@blueprint.get("/settings/scoring")
@crm_setting
def scoring_settings():
    rows = _rule_rows(scoring.list_rules())
    kind = request.args.get("add")
    if kind in RULE_DEFAULTS:  # "Add a rule": a new row to fill in, saved with the others
        rows.append({"kind": kind, "points": 10, "is_active": True, **RULE_DEFAULTS[kind]})
    return _scoring_page(rows)


@blueprint.post("/settings/scoring")
@crm_setting
def save_scoring():
    rows, rules, numbers = _posted_rules(request.form)
    try:
        scoring.save_rules(me(), rules)
    except ValidationError as exc:
        return _scoring_page(rows, 422, errors=_renumbered(exc.fields, numbers),
                             error=exc.message)
    flash(_("The scoring rules were saved. Scores are being recomputed."), "success")
    return see_other("customers.scoring_settings")
