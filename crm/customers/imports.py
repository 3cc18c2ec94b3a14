"""CSV in and out of the CRM: the import of a spreadsheet (upload, preview, column mapping,
the job that runs it, its report of rejected rows) and the export of a filtered list.

The rows themselves are written by crm/customers/jobs.py `run_import`, in batches, through
the validation of crm/customers/services/fields.py.

Excel on Arabic Windows saves "CSV" in Windows-1256, "CSV UTF-8" with a BOM and "Unicode text"
in UTF-16 with tabs. The upload detects the encoding and separator from the file's first bytes
(`detect_reading`), the preview shows them and lets the importer choose others, and the import
keeps the choice so its job reads the file exactly as the preview did. Starting the import
decodes the whole file once, so a file that stops being readable further down is refused
before any row is written rather than imported half or mangled.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import charset_normalizer
from flask import Flask, current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import select

from crm.customers.models import CustomerImport
from crm.customers.services import (
    CustomerFilters,
    check_text,
    count_customers,
    create_field_definition,
    list_customers,
    list_field_definitions,
    list_stages,
    not_found,
)
from crm.errors import ConflictError, ValidationError, file_too_large
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.i18n import current_language
from crm.jobs import BULK_QUEUE, enqueue
from crm.search import fold_text
from crm.tenancy import current_organization_id, get_in_organization, organization_context
from crm.validation import collect

IMPORT_JOB = "crm.customers.jobs:run_import"  # jobs.py builds on this module
IMPORT_MAX_BYTES = 50 * 1024 * 1024
IMPORT_PREVIEW_ROWS = 5
EXPORT_PAGE = 500
IMPORT_FIELDS = ("name", "phone", "email", "company", "tags", "notes", "stage", "owner")
NEW_FIELD = "new"  # the mapping target of a column that becomes a new custom field

# The encodings a file can be read in, with their Python codecs: UTF-8 as "utf-8-sig", so that
# Excel's BOM never sticks to the first column's name ("utf-16" drops its BOM by itself).
ENCODINGS = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "windows-1256": "cp1256",
             "iso-8859-6": "iso8859-6", "windows-1252": "cp1252"}
ENCODING_LABELS = {"utf-8": lazy_gettext("UTF-8 (Unicode)"),
                   "utf-16": lazy_gettext("UTF-16 (Unicode)"),
                   "windows-1256": lazy_gettext("Windows-1256 (Arabic)"),
                   "iso-8859-6": lazy_gettext("ISO-8859-6 (Arabic)"),
                   "windows-1252": lazy_gettext("Windows-1252 (Western European)")}
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
DELIMITER_LABELS = {"comma": lazy_gettext("Comma (,)"), "semicolon": lazy_gettext("Semicolon (;)"),
                    "tab": lazy_gettext("Tab")}
# What detection reads: enough for any header and many rows, the same for a 50 MB file.
DETECTION_SAMPLE = 64 * 1024
_SNIFFED_LINES = 50
# A file that is not Unicode is one of these; charset-normalizer tells which fits its bytes.
_GUESSED = ("windows-1256", "iso-8859-6", "windows-1252")
_BY_CODEC = {codecs.lookup(codec).name: name for name, codec in ENCODINGS.items()}


# -- export -------------------------------------------------------------------------------------

def export_csv(actor: User, filters: CustomerFilters) -> Iterator[str]:
    """Audit an export of the filtered customers; its CSV lines for Excel (UTF-8 with BOM), to
    stream. Cells that a spreadsheet would run as a formula are prefixed with an apostrophe.

    The lines are sent after the request has ended, and its database session with it (objects
    loaded in it, the logged-in user too, can no longer load a column). So everything they need
    from the request is read here, and they read the customers in an app context and a
    transaction of their own, as the organization read here.
    """
    audit("customers.exported", actor, filters=filters.as_params(),
          rows=count_customers(filters))
    language = current_language()
    definitions = list_field_definitions()
    header = [_("Name"), _("Phone"), _("Email"), _("Company"), _("Stage"), _("Owner"),
              _("Tags"), _("Source"), _("Score"), _("Created"), _("Last contacted"),
              _("Notes"), *(d.label for d in definitions)]
    return _export_lines(current_app._get_current_object(), current_organization_id(), filters,
                         header, [d.key for d in definitions],
                         {stage.id: stage.name_in(language) for stage in list_stages()})


def _export_lines(app: Flask, organization_id: int, filters: CustomerFilters,
                  header: list[str], field_keys: list[str], stage_names: dict[int, str]
                  ) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: Iterable[object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(spreadsheet_row(cells))
        return buffer.getvalue()

    yield "\ufeff" + line(header)
    with app.app_context(), organization_context(organization_id):
        cursor = None
        while True:
            rows, cursor = list_customers(filters, cursor, EXPORT_PAGE, related=True)
            lines = "".join(line([
                c.name, c.phone, c.email, c.company, stage_names.get(c.stage_id, ""),
                c.owner.email if c.owner else "", ", ".join(c.tags), c.source, c.score,
                c.created_at.isoformat(),
                c.last_contacted_at.isoformat() if c.last_contacted_at else "", c.notes,
                *(c.custom_fields.get(key, "") for key in field_keys)]) for c in rows)
            db.session.close()  # no transaction or connection held while the client reads
            yield lines
            if cursor is None:
                return


def spreadsheet_row(cells: Iterable[object]) -> list[object]:
    """A row for a CSV file people open in Excel: a cell that it would run as a formula (=, +,
    -, @, tab or carriage return first) gets an apostrophe first; None is empty."""
    return ["'" + cell if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r")
            else "" if cell is None else cell for cell in cells]


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


@dataclass(frozen=True)
class Reading:
    """How a CSV file is read: its encoding and separator (keys of ENCODINGS, DELIMITERS)."""

    encoding: str
    delimiter: str

    @classmethod
    def of(cls, imp: CustomerImport) -> Reading:
        return cls(imp.encoding, imp.delimiter)


def detect_reading(sample: bytes) -> Reading:
    """Guess a file's encoding and separator from its first bytes.

    A BOM names the encoding; else the file is UTF-8 when its bytes are valid UTF-8, or the
    single-byte encoding charset-normalizer finds most plausible; no fit at all (a binary file)
    is refused. The separator is the one csv.Sniffer finds in the first lines, else a comma.
    """
    encoding = _detect_encoding(sample)
    if encoding is None:
        raise _unrecognised()
    # Replacement only for counting separators: the preview decodes strictly.
    text = codecs.getincrementaldecoder(ENCODINGS[encoding])(errors="replace").decode(sample)
    return Reading(encoding, _detect_delimiter(text))


def _unrecognised() -> ValidationError:
    return ValidationError({"file": _("The file's text could not be recognised. In Excel, save "
                                      "it as \"CSV UTF-8\" and upload it again.")})


def _detect_encoding(sample: bytes) -> str | None:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        # Not final: a character cut at the end of the sample is no error.
        codecs.getincrementaldecoder("utf-8")().decode(sample)
    except UnicodeDecodeError:
        best = charset_normalizer.from_bytes(
            sample, cp_isolation=[ENCODINGS[name] for name in _GUESSED]).best()
        return _BY_CODEC.get(codecs.lookup(best.encoding).name) if best else None
    return "utf-8"


def _detect_delimiter(text: str) -> str:
    lines = text.split("\n")[:-1][:_SNIFFED_LINES] or [text]  # whole lines: the sample may
    try:                                                      # end in the middle of one
        found = csv.Sniffer().sniff("\n".join(lines), "".join(DELIMITERS.values())).delimiter
    except csv.Error:  # one column, or nothing consistent
        return "comma"
    return next(name for name, char in DELIMITERS.items() if char == found)


def choose_reading(imp: CustomerImport, raw: Mapping) -> Reading:
    """The encoding and separator a person chose ({"encoding", "delimiter"}, each from the
    offered lists); what `raw` leaves out stays as the import has it."""
    def choice(name: str, options: Mapping) -> str:
        value = raw.get(name, getattr(imp, name))
        if value not in options:
            raise ValidationError({name: _("Choose one of the listed options.")})
        return value

    return Reading(**collect({"encoding": lambda: choice("encoding", ENCODINGS),
                              "delimiter": lambda: choice("delimiter", DELIMITERS)}))


def _unreadable(reading: Reading) -> ValidationError:
    return ValidationError({"encoding": _("This file cannot be read as %(encoding)s. Choose its "
                                          "encoding.",
                                          encoding=ENCODING_LABELS[reading.encoding])})


def check_readable(path: str | Path, reading: Reading) -> None:
    """Decode the whole file once, a chunk at a time, so that an import never starts on a file
    that its encoding cannot read to the end."""
    decoder = codecs.getincrementaldecoder(ENCODINGS[reading.encoding])()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _unreadable(reading) from None


def open_csv(path: str | Path, reading: Reading) -> Iterator[list[str]]:
    """Rows of a CSV file read as `reading` says, streamed: the file is decoded as it is read."""
    with open(path, encoding=ENCODINGS[reading.encoding], newline="") as handle:
        yield from csv.reader(handle, delimiter=DELIMITERS[reading.delimiter])


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


def imported_any() -> bool:
    """Has the organization imported customers yet (the dashboard's checklist)?"""
    return bool(db.session.scalar(select(select(CustomerImport.id)
                                         .where(CustomerImport.status == "done").exists())))


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
    try:
        with open(path, "rb") as stored:
            reading = detect_reading(stored.read(DETECTION_SAMPLE))
        columns, _rows = _read_preview(path, reading)
    except ValidationError as exc:
        path.unlink(missing_ok=True)
        if "encoding" in exc.fields:  # a BOM that lies; there is no encoding to choose yet
            raise _unrecognised() from None
        raise
    imp = CustomerImport(filename=filename, path=str(path), created_by_id=actor.id,
                         encoding=reading.encoding, delimiter=reading.delimiter)
    imp.mapping = suggest_mapping(columns)
    db.session.add(imp)
    db.session.flush()
    audit("customer_import.uploaded", actor, imp, filename=imp.filename)
    return imp


def _read_preview(path: str | Path, reading: Reading) -> tuple[list[str], list[list[str]]]:
    rows = open_csv(path, reading)
    try:
        header = next(rows, None)
        preview = [row for _n, row in zip(range(IMPORT_PREVIEW_ROWS), rows, strict=False)]
    except UnicodeDecodeError:
        raise _unreadable(reading) from None
    except csv.Error:
        raise ValidationError({"file": _("This file could not be read as CSV.")}) from None
    finally:
        rows.close()
    if not header or not any(cell.strip() for cell in header):
        raise ValidationError({"file": _("The file is empty: its first line must name the "
                                         "columns.")})
    return import_columns(header), preview


def preview_import(imp: CustomerImport, reading: Reading | None = None
                   ) -> tuple[list[str], list[list[str]]]:
    """The file's column names and first rows read as `reading` (else as stored), to map
    columns to fields."""
    return _read_preview(imp.path, reading or Reading.of(imp))


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


def suggest_field_key(column: str, index: int) -> str:
    """A key for a custom field made from a column: its name's Latin letters and digits, else
    its position (an Arabic name has none)."""
    key = re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")[:40]
    return key if re.match("[a-z]", key) else f"column_{index + 1}"


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


def configure_import(actor: User, imp: CustomerImport, mapping: object, on_duplicate: object,
                     reading: Reading | None = None,
                     new_fields: Mapping[str, Mapping] | None = None) -> CustomerImport:
    """Map columns to fields, choose what a duplicate does (update or skip) and how the file
    is read (else as detected), start the job.

    A column mapped to NEW_FIELD becomes the custom field `new_fields[column]` describes
    (label, key, type, choices), created here through the field service. Any error creates
    no field at all: the savepoint takes back those already made.
    """
    if imp.status != "uploaded":
        raise ConflictError(_("This import has already started."))
    reading = reading or Reading.of(imp)
    columns, _rows = _read_preview(imp.path, reading)
    check_readable(imp.path, reading)
    with db.session.begin_nested():
        values = collect({
            "mapping": lambda: _check_mapping(actor, mapping, columns, new_fields or {}),
            "on_duplicate": lambda: _check_on_duplicate(on_duplicate)})
    imp.mapping, imp.on_duplicate = values["mapping"], values["on_duplicate"]
    imp.encoding, imp.delimiter = reading.encoding, reading.delimiter
    imp.status = "queued"
    audit("customer_import.started", actor, imp, on_duplicate=imp.on_duplicate)
    enqueue(IMPORT_JOB, imp.id, queue=BULK_QUEUE)
    return imp


def resume_import(actor: User, imp: CustomerImport) -> CustomerImport:
    """Run a failed import again: it continues after the last row it saved."""
    if imp.status != "failed":
        raise ConflictError(_("Only a failed import can be resumed."))
    imp.status, imp.error = "queued", None
    audit("customer_import.resumed", actor, imp)
    enqueue(IMPORT_JOB, imp.id, queue=BULK_QUEUE)
    return imp


def _check_on_duplicate(raw: object) -> str:
    if raw not in ("update", "skip"):
        raise ValidationError({"on_duplicate": _("Choose one of the listed options.")})
    return raw


def _check_mapping(actor: User, raw: object, columns: list[str],
                   new_fields: Mapping[str, Mapping]) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValidationError({"mapping": _("Choose a field for the columns to import.")})
    targets = import_targets()
    mapping, used, errors = {}, set(), {}
    for index, column in enumerate(columns):
        target = raw.get(column) or ""
        if target == NEW_FIELD:
            try:
                target = _new_field(actor, new_fields.get(column))
            except ValidationError as exc:
                errors.update({f"new-{index}-{name}": message
                               for name, message in exc.fields.items()})
        elif target and (target not in targets or target in used):
            errors[f"mapping-{index}"] = _("Choose a field not chosen for another column.")
        used.add(target)
        mapping[column] = target
    if errors:
        raise ValidationError(errors)
    if not used & {"name", "phone", "email"}:
        raise ValidationError({"mapping": _("Map at least the name, phone or email column.")})
    return mapping


def _new_field(actor: User, data: object) -> str:
    """Create the custom field a column becomes; the column's target."""
    try:
        definition = create_field_definition(actor, data if isinstance(data, Mapping) else {})
    except ConflictError as exc:  # a key already taken: for the form, an error like the others
        raise ValidationError(exc.fields) from None
    return f"cf:{definition.key}"


def import_report_path(imp: CustomerImport) -> Path | None:
    """The CSV of rejected rows with their reasons, once there is one."""
    if not imp.report_path:
        return None
    path = Path(imp.report_path)
    return path if path.is_file() else None
