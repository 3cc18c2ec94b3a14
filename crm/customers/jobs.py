"""The CRM's jobs: CSV imports, and rescoring every customer each night.

Imports stream the file and write it in batches of BATCH rows: each batch is checked in Python,
looked up against existing customers with one query, inserted with one multi-row INSERT ... ON
CONFLICT DO NOTHING, updated with one executemany, and committed together with the progress
counters. So a job cut off at any point reruns from `processed_rows` without writing a row
twice; the report of rejected rows is trimmed back to that point too.

Nightly rescoring: `rescore_all`, on the schedule crm/customers/services/nightly.py keeps.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select, text

from crm import events
from crm.billing import gate
from crm.customers import imports, services
from crm.customers.models import Customer, CustomerImport
from crm.customers.services import nightly, scoring
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import current_organization
from crm.models import utcnow
from crm.search import fold_text
from crm.tenancy import current_organization_id, get_in_organization
from crm.transaction import commit, rollback

log = logging.getLogger("crm.customers")
BATCH = 500


# -- nightly rescoring ----------------------------------------------------------------------

def rescore_all(scheduled_for: str | None = None) -> int:
    """Rescore every customer of the organization in batches; return how many changed.

    A nightly run (`scheduled_for` is its time) schedules the next night's when it is done or
    fails, unless a newer chain replaced its own (a scheduler down for days leaves stale runs
    behind; those end their chain instead of doubling it).
    """
    org_id = current_organization_id()
    try:
        return _rescore_batches()
    finally:
        if scheduled_for is not None:
            nightly.continue_chain(org_id, scheduled_for)


def _rescore_batches() -> int:
    context = scoring.ScoringContext.load()
    last_id, changed = 0, 0
    while ids := list(db.session.scalars(
            select(Customer.id).where(Customer.id > last_id, Customer.merged_into_id.is_(None))
            .order_by(Customer.id).limit(BATCH))):
        changed += scoring.rescore_customers(ids, context)
        commit()
        last_id = ids[-1]
    return changed


# -- imports --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    """A custom field's definition, copied out of the session (the job commits per batch)."""

    key: str
    type: str
    choices: list


@dataclass
class ImportPlan:
    """How each row of one import becomes a customer."""

    import_id: int
    actor_id: int | None
    on_duplicate: str
    columns: dict[str, int]  # target field → column index
    stages: dict[str, int]  # folded stage name (either language) → id
    owners: dict[str, int]  # email → user id
    fields: dict[str, FieldSpec]
    labels: dict[str, str]  # error key → the column's name, for the report
    default_stage_id: int | None
    country: str  # phone numbers without a country code are of this one
    required: list[str]  # custom fields a new customer must have
    scoring: scoring.ScoringContext

    @classmethod
    def load(cls, imp: CustomerImport, header: list[str]) -> ImportPlan:
        columns = imports.import_columns(header)
        targets = {target: columns.index(column) for column, target in imp.mapping.items()
                   if target and column in columns}
        stages = services.list_stages()
        names = {fold_text(name): stage.id for stage in reversed(stages)
                 for name in (stage.name_ar, stage.name_en)}
        owners = dict(db.session.execute(select(User.email, User.id).where(User.is_active)).all())
        definitions = services.list_field_definitions()
        fields = {d.key: FieldSpec(d.key, d.type, list(d.choices)) for d in definitions}
        labels = {f"cf_{d.key}": d.label for d in definitions}
        labels.update({("cf_" + t[3:] if t.startswith("cf:") else t): columns[i]
                       for t, i in targets.items()})
        return cls(imp.id, imp.created_by_id, imp.on_duplicate, targets, names, owners, fields,
                   labels, stages[0].id, current_organization().country,
                   [d.key for d in definitions if d.is_required],
                   scoring.ScoringContext.load())


@dataclass
class _Entry:
    """One customer-to-be of a batch, with the rows that describe it."""

    values: dict[str, Any]
    rows: list[tuple[int, list[str]]] = field(default_factory=list)


class RejectReport:
    """The rejected rows with their reasons, a CSV the importer downloads (and opens in Excel:
    cells are written as the export writes them, formulas defused)."""

    def __init__(self, imp: CustomerImport, header: list[str]):
        self.path = imports.import_directory() / f"{imp.id}-rejected.csv"
        self.header = [_("Row"), _("Reason"), *header]
        self.pending: list[list[object]] = []
        if self.path.exists():
            self._trim(imp.processed_rows + 1)

    def _trim(self, last_row: int) -> None:
        """Drop rows written by a run that stopped before it could commit them."""
        with open(self.path, encoding="utf-8-sig", newline="") as handle:
            kept = [row for number, row in enumerate(csv.reader(handle))
                    if number == 0 or (row and row[0].isdigit() and int(row[0]) <= last_row)]
        self.path.unlink()
        self.pending = kept
        self.flush()

    def reject(self, number: int, cells: list[str], reason: str) -> None:
        if not self.pending and not self.path.exists():
            self.pending.append(self.header)
        self.pending.append([number, reason, *cells])

    def flush(self) -> str | None:
        """Append what is pending (written before the batch commits); the path once written."""
        if self.pending:
            new = not self.path.exists()
            with open(self.path, "a", encoding="utf-8-sig" if new else "utf-8",
                      newline="") as handle:
                csv.writer(handle).writerows(imports.spreadsheet_row(row)
                                             for row in self.pending)
                handle.flush()
                os.fsync(handle.fileno())
            self.pending = []
        return str(self.path) if self.path.exists() else None


def run_import(import_id: int) -> None:
    """Import a configured CSV file; rerun after a crash, it continues where it stopped."""
    imp = get_in_organization(CustomerImport, import_id)
    if imp is None or imp.status not in ("queued", "running"):
        return
    with force_locale(_language_of(imp)):
        try:
            _import(imp)
        except Exception as exc:
            rollback()
            _fail(import_id, exc)
            commit()
            raise


def _language_of(imp: CustomerImport) -> str:
    user = get_in_organization(User, imp.created_by_id) if imp.created_by_id else None
    return (user and user.preferred_language) or current_organization().default_language


def _fail(import_id: int, exc: Exception) -> None:
    imp = get_in_organization(CustomerImport, import_id)
    if imp is None:
        return
    imp.status = "failed"
    if isinstance(exc, UnicodeDecodeError):
        imp.error = _("Save the file as CSV UTF-8 and upload it again.")
    else:
        imp.error = _("The import stopped unexpectedly. Resume it to continue.")
    log.exception("import %s failed", import_id)
    _announce(imp)


def _import(imp: CustomerImport) -> None:
    reading = imports.Reading.of(imp)  # as the preview showed the file
    rows = imports.open_csv(imp.path, reading)
    try:
        header = next(rows)
        plan = ImportPlan.load(imp, header)
        if not imp.total_rows:
            imp.total_rows = sum(1 for _row in imports.open_csv(imp.path, reading)) - 1
        imp.status = "running"
        report = RejectReport(imp, header)
        commit()
        done = imp.processed_rows
        numbered = enumerate(islice(rows, done, None), start=done + 2)  # spreadsheet rows
        for batch in _batches(numbered, BATCH):
            if not _still_at(plan.import_id, done):
                log.warning("import %s is being run by another job; this one stops",
                            plan.import_id)
                return
            counts = import_batch(plan, batch, report)
            done += len(batch)
            _record(plan.import_id, done, counts, report.flush())
            commit()
    finally:
        rows.close()
    _finish(imp)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _still_at(import_id: int, processed: int) -> bool:
    """Lock the import's row for this batch; False when another run got further."""
    current = db.session.scalar(select(CustomerImport.processed_rows)
                                .where(CustomerImport.id == import_id).with_for_update())
    return current == processed


def _record(import_id: int, processed: int, counts: Counter, report_path: str | None) -> None:
    imp = db.session.get(CustomerImport, import_id)
    imp.processed_rows = processed
    imp.created_count += counts["created"]
    imp.updated_count += counts["updated"]
    imp.skipped_count += counts["skipped"]
    imp.rejected_count += counts["rejected"]
    imp.report_path = report_path
    _announce(imp)


def _announce(imp: CustomerImport) -> None:
    events.publish("customer_import.progress", {
        "import_id": imp.id, "status": imp.status, "processed_rows": imp.processed_rows,
        "total_rows": imp.total_rows})


def _finish(imp: CustomerImport) -> None:
    imp.status = "done"
    imp.finished_at = utcnow()
    _announce(imp)
    commit()
    Path(imp.path).unlink(missing_ok=True)
    log.info("import %s done: %s created, %s updated, %s skipped, %s rejected", imp.id,
             imp.created_count, imp.updated_count, imp.skipped_count, imp.rejected_count)


def import_batch(plan: ImportPlan, batch: list[tuple[int, list[str]]],
                 report: RejectReport) -> Counter:
    """Check, dedupe and write one batch of rows; count what became of each row."""
    counts: Counter = Counter()
    entries = _entries(plan, batch, report, counts)
    created, updated = _write(plan, entries, report, counts)
    if created or updated:
        _log_imported(plan, created, updated)
        scoring.rescore_customers(created + updated, plan.scoring)
    return counts


def _entries(plan: ImportPlan, batch: list[tuple[int, list[str]]], report: RejectReport,
             counts: Counter) -> list[_Entry]:
    """The batch's rows checked and folded together where they share a phone or email."""
    entries: list[_Entry] = []
    by_key: dict[tuple[str, str], _Entry] = {}
    for number, cells in batch:
        if not any(cell.strip() for cell in cells):
            counts["skipped"] += 1  # Excel's trailing blank lines
            continue
        try:
            values = row_values(plan, cells)
        except ValidationError as exc:
            report.reject(number, cells, _reason(plan, exc))
            counts["rejected"] += 1
            continue
        keys = [(name, values[name]) for name in ("phone", "email") if values.get(name)]
        hits = {id(by_key[key]): by_key[key] for key in keys if key in by_key}
        if len(hits) > 1:
            report.reject(number, cells, _("Its phone number and email are on two different "
                                           "earlier rows."))
            counts["rejected"] += 1
            continue
        if hits and plan.on_duplicate == "skip":
            counts["skipped"] += 1
            continue
        entry = next(iter(hits.values())) if hits else _Entry({})
        if not hits:
            entries.append(entry)
        entry.values.update(values)
        entry.rows.append((number, cells))
        by_key.update(dict.fromkeys(keys, entry))
    return entries


_CELL_CHECKS: dict[str, Any] = {
    "name": lambda plan, raw: services.check_text(raw, "name", 160),
    "phone": lambda plan, raw: services.check_phone(raw, region=plan.country),
    "email": lambda plan, raw: services.check_email(raw),
    "company": lambda plan, raw: services.check_text(raw, "company", 160),
    "tags": lambda plan, raw: services.check_tags(raw),
    "notes": lambda plan, raw: services.check_text(raw, "notes", 10_000, single_line=False),
    "stage": lambda plan, raw: _lookup(plan.stages, fold_text(raw), "stage"),
    "owner": lambda plan, raw: _lookup(plan.owners, raw.lower(), "owner"),
}
_FIELD_OF = {"stage": "stage_id", "owner": "owner_id"}


def row_values(plan: ImportPlan, cells: list[str]) -> dict[str, Any]:
    """The fields one row sets (empty cells set nothing), or a ValidationError naming every
    bad cell."""
    values: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for target, index in plan.columns.items():
        raw = cells[index].strip() if index < len(cells) else ""
        if not raw:
            continue
        try:
            if target.startswith("cf:"):
                spec = plan.fields.get(target[3:])  # None: the field was deleted meanwhile
                if spec is not None:
                    custom[spec.key] = services.check_custom_value(spec, raw, f"cf_{spec.key}")
            elif (value := _CELL_CHECKS[target](plan, raw)) not in (None, "", []):
                values[_FIELD_OF.get(target, target)] = value
        except ValidationError as exc:
            errors.update(exc.fields)
    if errors:
        raise ValidationError(errors)
    if custom:
        values["custom_fields"] = custom
    values["name"] = values.get("name") or values.get("phone") or values.get("email") or ""
    if not values["name"]:
        raise ValidationError({"name": _("A name, phone number or email is required.")})
    return values


def _lookup(table: dict[str, int], key: str, name: str) -> int:
    if key not in table:
        raise ValidationError({name: _("There is no stage with this name.") if name == "stage"
                               else _("There is no team member with this email.")})
    return table[key]


def _reason(plan: ImportPlan, exc: ValidationError) -> str:
    return "; ".join(f"{plan.labels.get(key, key)}: {message}"
                     for key, message in exc.fields.items())


def _write(plan: ImportPlan, entries: list[_Entry], report: RejectReport, counts: Counter
           ) -> tuple[list[int], list[int]]:
    """Insert the new customers and update (or skip) the existing ones; their ids."""
    by_phone = _existing("phone", [e.values["phone"] for e in entries if "phone" in e.values])
    by_email = _existing("email", [e.values["email"] for e in entries if "email" in e.values])
    inserts, updates = [], []
    for entry in entries:
        matches = {by_phone.get(entry.values.get("phone")),
                   by_email.get(entry.values.get("email"))} - {None}
        if len(matches) > 1:
            _reject(entry, report, counts, _("Its phone number and email belong to two "
                                              "different customers."))
        elif matches and plan.on_duplicate == "skip":
            counts["skipped"] += len(entry.rows)
        elif matches:
            updates.append((matches.pop(), entry))
            counts["updated"] += len(entry.rows)
        elif missing := [key for key in plan.required
                         if key not in entry.values.get("custom_fields", {})]:
            _reject(entry, report, counts, _reason(plan, ValidationError(
                {f"cf_{key}": _("This field is required.") for key in missing})))
        else:
            inserts.append(entry)
    return _insert(plan, _within_plan(inserts, report, counts), counts), _update(plan, updates)


def _within_plan(entries: list[_Entry], report: RejectReport, counts: Counter) -> list[_Entry]:
    """The new customers the plan has room for; the others rejected with the limit's message
    (what is updated takes no room)."""
    room = gate.room("customers")
    if room is None or len(entries) <= room:
        return entries
    fitting, refused = entries[:room], entries[room:]
    reason = gate.PlanLimitError("customers", gate.usage("customers") + len(fitting),
                                 gate.limit_of("customers")).message
    for entry in refused:
        _reject(entry, report, counts, reason)
    return fitting


# Probing the unique index once per value (a join from the batch's values) keeps each lookup
# cheap however many customers the organization has, whatever the planner's statistics say.
_EXISTING = {column: text(f"""
    SELECT c.{column}, c.id FROM unnest(CAST(:values AS text[])) AS v(value)
    JOIN customers c ON c.organization_id = :org AND c.{column} = v.value""")
    for column in ("phone", "email")}


def _existing(column: str, values: list[str]) -> dict[str, int]:
    """The ids of the customers who have these phone numbers (or emails)."""
    if not values:
        return {}
    return dict(db.session.execute(_EXISTING[column], {
        "org": current_organization_id(), "values": values}).all())


def _reject(entry: _Entry, report: RejectReport, counts: Counter, reason: str) -> None:
    for number, cells in entry.rows:
        report.reject(number, cells, reason)
    counts["rejected"] += len(entry.rows)


# Set-based writes: one short statement per batch whose columns arrive as arrays (unnest), so
# neither SQLAlchemy nor the driver handles thousands of placeholders. RLS checks each row's
# organization; the explicit condition keeps updates on the organization's rows.
_INSERT = text("""
    INSERT INTO customers (organization_id, name, phone, email, company, tags, notes,
                           custom_fields, stage_id, owner_id, source)
    SELECT :org, r.name, r.phone, r.email, r.company,
           ARRAY(SELECT jsonb_array_elements_text(r.tags)), r.notes, r.custom_fields,
           r.stage_id, r.owner_id, 'import'
    FROM unnest(CAST(:name AS text[]), CAST(:phone AS text[]), CAST(:email AS text[]),
                CAST(:company AS text[]), CAST(:tags AS jsonb[]), CAST(:notes AS text[]),
                CAST(:custom_fields AS jsonb[]), CAST(:stage_id AS bigint[]),
                CAST(:owner_id AS bigint[]))
         AS r(name, phone, email, company, tags, notes, custom_fields, stage_id, owner_id)
    ON CONFLICT DO NOTHING
    RETURNING id, phone, email""")
_UPDATE = text("""
    UPDATE customers c SET
      name = COALESCE(r.name, c.name), phone = COALESCE(r.phone, c.phone),
      email = COALESCE(r.email, c.email), company = COALESCE(r.company, c.company),
      tags = CASE WHEN r.tags IS NULL THEN c.tags
                  ELSE ARRAY(SELECT jsonb_array_elements_text(r.tags)) END,
      notes = COALESCE(r.notes, c.notes), stage_id = COALESCE(r.stage_id, c.stage_id),
      owner_id = COALESCE(r.owner_id, c.owner_id),
      custom_fields = c.custom_fields || COALESCE(r.custom_fields, '{}'), updated_at = now(),
      version = c.version + 1, edited_at = now(), edited_by_id = :actor
    FROM unnest(CAST(:id AS bigint[]), CAST(:name AS text[]), CAST(:phone AS text[]),
                CAST(:email AS text[]), CAST(:company AS text[]), CAST(:tags AS jsonb[]),
                CAST(:notes AS text[]), CAST(:custom_fields AS jsonb[]),
                CAST(:stage_id AS bigint[]), CAST(:owner_id AS bigint[]))
         AS r(id, name, phone, email, company, tags, notes, custom_fields, stage_id, owner_id)
    WHERE c.id = r.id AND c.organization_id = :org""")
_LOG_IMPORTED = text("""
    INSERT INTO customer_activities (organization_id, customer_id, type, data, actor_id,
                                     source_key)
    SELECT :org, r.id, 'imported', jsonb_build_object('import_id', :import_id, 'action',
           r.action), :actor, 'import:' || :import_id || ':' || r.id
    FROM unnest(CAST(:id AS bigint[]), CAST(:action AS text[])) AS r(id, action)
    ON CONFLICT (organization_id, source_key) WHERE source_key IS NOT NULL DO NOTHING""")
_COLUMNS = ("name", "phone", "email", "company", "tags", "notes", "custom_fields", "stage_id",
            "owner_id")
_JSON_COLUMNS = ("tags", "custom_fields")


def _arrays(rows: list[dict[str, Any]], defaults: dict[str, Any]) -> dict[str, list]:
    """Columns of `rows` as parallel lists (JSON text for the jsonb ones)."""
    columns = {name: [row.get(name, defaults.get(name)) for row in rows] for name in _COLUMNS}
    for name in _JSON_COLUMNS:
        columns[name] = [None if value is None else json.dumps(value, ensure_ascii=False)
                         for value in columns[name]]
    return columns


def _insert(plan: ImportPlan, entries: list[_Entry], counts: Counter) -> list[int]:
    if not entries:
        return []
    defaults = {"company": "", "tags": [], "notes": "", "custom_fields": {},
                "stage_id": plan.default_stage_id}
    inserted = db.session.execute(_INSERT, {
        "org": current_organization_id(),
        **_arrays([entry.values for entry in entries], defaults)}).all()
    keys = {key for _id, phone, email in inserted for key in (phone, email) if key}
    for entry in entries:
        own = {entry.values.get("phone"), entry.values.get("email")} - {None}
        if own and not own & keys:  # written meanwhile by someone else
            counts["skipped"] += len(entry.rows)
        else:
            counts["created"] += 1
            counts["updated"] += len(entry.rows) - 1
    return [row[0] for row in inserted]


def _update(plan: ImportPlan, updates: list[tuple[int, _Entry]]) -> list[int]:
    """Overwrite what the rows give (empty cells keep what the customer has): an edit by the
    person who imported, so a form opened before it is told (crm/versions.py)."""
    if not updates:
        return []
    ids = [id_ for id_, _entry in updates]
    db.session.execute(_UPDATE, {"org": current_organization_id(), "id": ids,
                                 "actor": plan.actor_id,
                                 **_arrays([entry.values for _id, entry in updates], {})})
    return ids


def _log_imported(plan: ImportPlan, created: list[int], updated: list[int]) -> None:
    """An `imported` entry on each timeline, once per import and customer."""
    db.session.execute(_LOG_IMPORTED, {
        "org": current_organization_id(), "import_id": plan.import_id, "actor": plan.actor_id,
        "id": created + updated,
        "action": ["created"] * len(created) + ["updated"] * len(updated)})
