"""CSV in and out of the CRM: the import of a spreadsheet (upload, preview, column mapping,
the job that runs it, its report of rejected rows) and the export of a filtered list.

The rows themselves are written by crm/customers/jobs.py `run_import`, in batches, through
the validation of crm/customers/services.py.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flask import current_app
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import select

from crm.customers.models import CustomerImport
from crm.customers.services import (
    CustomerFilters,
    check_text,
    collect,
    list_customers,
    list_field_definitions,
    list_stages,
    not_found,
)
from crm.errors import ConflictError, ValidationError, file_too_large
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.search import fold_text
from crm.tenancy import current_organization_id, get_in_organization

IMPORT_MAX_BYTES = 50 * 1024 * 1024
IMPORT_PREVIEW_ROWS = 5
IMPORT_FIELDS = ("name", "phone", "email", "company", "tags", "notes", "stage", "owner")


# -- export -------------------------------------------------------------------------------------

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


# -- imports ------------------------------------------------------------------------------------

def access_import(import_id: int) -> CustomerImport:
    imp = get_in_organization(CustomerImport, import_id)
    if imp is None:
        raise not_found()
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
                raise file_too_large(IMPORT_MAX_BYTES)
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
