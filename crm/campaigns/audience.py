"""Who a campaign goes to: a CRM segment, a tag, hand-picked customers, or an uploaded CSV
file of phone numbers; frozen into `campaign_recipients` when the campaign starts.

Freezing is set-based however large the audience: one INSERT ... SELECT from the CRM's own
filtered query (crm/customers/services.py `filtered_query`), or the CSV file read in batches of
CSV_BATCH rows, each one multi-row INSERT. Duplicate phones collapse into one recipient (ON
CONFLICT on the campaign's phone); a customer without a phone, or a CSV row whose number is
not valid (read as the CRM import reads it: crm/search.py `normalize_phone` in the
organization's country), becomes a `skipped` recipient with the reason. Consent is not looked
at here: it is checked at send time.
"""

from __future__ import annotations

import csv
import threading
import time
import uuid
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from heapq import merge
from itertools import accumulate, groupby, islice
from pathlib import Path
from typing import Any

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import BigInteger, Select, case, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert

from crm.campaigns.models import Campaign, CampaignRecipient
from crm.campaigns.rendering import variables_of
from crm.customers import services as customers
from crm.customers.imports import (
    DETECTION_SAMPLE,
    IMPORT_MAX_BYTES,
    Reading,
    detect_reading,
    import_columns,
    open_csv,
    suggest_mapping,
)
from crm.customers.models import Customer
from crm.errors import NotFoundError, ValidationError, file_too_large
from crm.extensions import db
from crm.foundation.services import current_organization
from crm.search import fold_text, matches, normalize_phone, search_forms
from crm.tenancy import current_organization_id

MAX_CUSTOMER_IDS = 10_000
CSV_BATCH = 1000
KINDS = ("segment_id", "tag", "customer_ids", "csv")


def check_audience(raw: object) -> dict[str, Any]:
    """An audience given as {"segment_id"}, {"tag"} or {"customer_ids"} (a CSV file is
    uploaded instead: `store_csv`)."""
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in KINDS[:3]:
        raise ValidationError({"audience": _("Choose a segment, a tag or customers.")})
    kind, value = next(iter(raw.items()))
    if kind == "segment_id":
        segment_id = customers.check_id(value, "audience")
        try:
            customers.access_segment(segment_id or 0)
        except NotFoundError:
            raise ValidationError({"audience": _("Choose one of your segments.")}) from None
        return {"segment_id": segment_id}
    if kind == "tag":
        return {"tag": customers.check_text(value, "audience", 40, required=True)}
    return {"customer_ids": _check_customer_ids(value)}


def _check_customer_ids(raw: object) -> list[int]:
    if not isinstance(raw, list | tuple) or not raw or len(raw) > MAX_CUSTOMER_IDS:
        raise ValidationError({"audience": _("Choose from 1 to %(n)d customers.",
                                             n=MAX_CUSTOMER_IDS)})
    ids = list(dict.fromkeys(customers.check_id(value, "audience") for value in raw))
    found = db.session.scalar(select(func.count()).select_from(Customer).where(
        Customer.id.in_(ids), Customer.merged_into_id.is_(None)))
    if found != len(ids):
        raise ValidationError({"audience": _("Some of these customers do not exist.")})
    return ids


def describe(audience: Mapping[str, Any]) -> str:
    """The kind of audience, for logs and the audit trail."""
    return next(iter(audience), "none")


# -- CSV files --------------------------------------------------------------------------------

def csv_directory() -> Path:
    """Where the organization's audience files live (the path carries the organization)."""
    path = (Path(current_app.config["INSTANCE_PATH"]) / "campaigns"
            / str(current_organization_id()))
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_csv(upload: Any) -> dict[str, Any]:
    """Keep an uploaded CSV file of phone numbers; the audience that names it: how it is read
    (as the CRM import detects it), which column holds the numbers (and the names, if any),
    whether the first line is a header, how many rows it has."""
    filename = customers.check_text(getattr(upload, "filename", "") or "", "file", 255)
    if not filename.lower().endswith((".csv", ".txt")):
        raise ValidationError({"file": _("Upload a CSV file (in Excel: Save as, CSV UTF-8).")})
    path = csv_directory() / f"{uuid.uuid4().hex}.csv"
    try:
        _save(upload, path)
        with open(path, "rb") as stored:
            reading = detect_reading(stored.read(DETECTION_SAMPLE))
        spec = _columns(path, reading)
    except (ValidationError, UnicodeDecodeError, csv.Error) as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError({"file": _("This file could not be read as CSV.")}) from None
    return {"csv": {"file": path.name, "filename": filename, "encoding": reading.encoding,
                    "delimiter": reading.delimiter, **spec}}


def _save(upload: Any, path: Path) -> None:
    size = 0
    with open(path, "wb") as target:
        while chunk := upload.stream.read(1024 * 1024):
            size += len(chunk)
            if size > IMPORT_MAX_BYTES:
                raise file_too_large(IMPORT_MAX_BYTES)
            target.write(chunk)


def _columns(path: Path, reading: Reading) -> dict[str, Any]:
    """Which column has the numbers and which the names; a first line with no valid number in
    the phone column is a header. Every row is read once (to count), nothing is kept."""
    rows = open_csv(path, reading)
    first = next(rows, None)
    if not first or not any(cell.strip() for cell in first):
        raise ValidationError({"file": _("The file is empty.")})
    region = current_organization().country
    mapping = suggest_mapping(import_columns(first))
    targets = list(mapping.values())
    phone = targets.index("phone") if "phone" in targets else _phone_column(first, region)
    if phone is None:
        raise ValidationError({"file": _("No column of this file holds phone numbers.")})
    name = targets.index("name") if "name" in targets else None
    header = normalize_phone(first[phone], region) is None
    # Blank lines count for nothing, as the freezing skips them.
    count = sum(1 for row in rows if any(cell.strip() for cell in row)) + (0 if header else 1)
    if count == 0:
        raise ValidationError({"file": _("The file has no rows under its header.")})
    return {"phone_column": phone, "name_column": name, "header": header, "rows": count}


def _phone_column(row: list[str], region: str) -> int | None:
    return next((index for index, cell in enumerate(row)
                 if normalize_phone(cell, region) is not None),
                0 if len(row) == 1 else None)


def csv_path(spec: Mapping[str, Any]) -> Path:
    """The stored file an audience names, only inside the organization's folder."""
    folder = csv_directory().resolve()
    path = (folder / str(spec.get("file", ""))).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise ValidationError({"audience": _("The uploaded file is missing; upload it again.")})
    return path


# -- counting and freezing --------------------------------------------------------------------

def customers_query(audience: Mapping[str, Any]) -> Select | None:
    """The customers an audience selects now (None for a CSV file)."""
    if "segment_id" in audience:
        segment = customers.access_segment(audience["segment_id"])
        return customers.filtered_query(customers.segment_filters(segment))
    if "tag" in audience:
        return customers.filtered_query(customers.CustomerFilters(tag=audience["tag"]))
    if "customer_ids" in audience:
        return select(Customer).where(Customer.id.in_(audience["customer_ids"]),
                                      Customer.merged_into_id.is_(None)).order_by(Customer.id)
    return None


# -- whom a preview is for --------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """Someone the message can be previewed for, with the variables the start will freeze for
    them: a customer (`key`: their id) or a row of the audience's file (`key`: its number
    under the header, from 1)."""

    key: int
    name: str
    phone: str | None
    variables: dict[str, Any]


def customer_candidate(customer: Customer) -> Candidate:
    return Candidate(customer.id, customer.name, customer.phone,
                     variables_of(customer.name, customer.company, customer.custom_fields))


def candidates(audience: Mapping[str, Any], limit: int, search: str = "") -> list[Candidate]:
    """The audience's first `limit` people now, or its first matching `search` (a name or a
    phone, folded as the CRM's search folds them): whom a page offers to preview the message
    for. None for a deleted segment; a file's rows that will not be sent to are left out."""
    if "csv" in audience:
        return _file_candidates(audience["csv"], limit, search)
    try:
        query = customers_query(audience) if audience else None
    except NotFoundError:
        return []
    if query is None:
        return []
    if search:
        matching = customers.filtered_query(customers.CustomerFilters(search=search))
        query = query.where(Customer.id.in_(
            matching.with_only_columns(Customer.id).order_by(None)))
    return [customer_candidate(customer) for customer in db.session.scalars(query.limit(limit))]


def _file_candidates(spec: Mapping[str, Any], limit: int, search: str) -> list[Candidate]:
    """The file's first `limit` recipients, or its first matching `search`: each number the
    first time the file gives it (the row the freezing keeps), named as the freezing names it
    (`_as_candidates`) and matched on that name or the number.

    A file of at most INDEX_MAX_ROWS rows is searched in its index (`_FileIndex`), read at the
    first search and kept a while: someone typing in the search box asks once a keystroke.
    Without an index (a larger file, or no search yet) the file is streamed, as follows;
    without a search only its first batch is read.

    The whole file is streamed a batch of CSV_BATCH rows at a time (one query each for the
    numbers the CRM knows): memory holds a batch, the matches and a fixed-size filter of the
    numbers read (`_NumbersRead`), never the file. So a match found on the file's name may be
    a number an earlier row gave under another name, which is the name sent: when the filter
    says the number may have been read before, a second read of the rows above the match
    settles it, and the search runs again without the numbers given before."""
    forms = search_forms(search, current_organization().country) if search else None
    index = _file_index(spec, build=forms is not None)  # the first rows cost one batch
    if index is not None:
        return index.candidates(limit, forms)
    dropped: set[str] = set()
    while True:
        found, doubtful = _first_matches(spec, limit, forms, dropped)
        given_before = _given_before(spec, doubtful)
        if not given_before:
            return found[:limit]
        dropped |= given_before


def _first_matches(spec: Mapping[str, Any], limit: int, forms: tuple[str, list[str]] | None,
                   dropped: set[str]) -> tuple[list[Candidate], dict[str, int]]:
    """At least `limit` rows matching `forms` (all those the file has, if fewer), the first
    of each number but `dropped`'s, as candidates (the batch where the limit was reached is
    read to its end); and those of them whose number a row above may have given (phone:
    row). Without a search every row matches, so a number's first row was taken; a match on
    the number would have been too."""
    found: dict[str, Candidate] = {}
    doubtful: dict[str, int] = {}
    numbers_read = _NumbersRead()
    for batch in _batches(_file_rows(csv_path(spec), spec)):
        fresh = [(number, phone, name) for number, phone, _raw, name in batch
                 if phone is not None and phone not in dropped and phone not in found]
        for candidate in _as_candidates(fresh):
            if candidate.phone not in found and (
                    forms is None or matches(forms, candidate.name, candidate.phone)):
                found[candidate.phone] = candidate
                if forms is not None and candidate.phone in numbers_read \
                        and not matches(forms, "", candidate.phone):
                    doubtful[candidate.phone] = candidate.key
            numbers_read.add(candidate.phone)
        if len(found) >= limit:
            break
    return list(found.values()), doubtful


class _NumbersRead:
    """The numbers a read of a file has met so far, in a fixed MiB however long the file (a
    Bloom filter): a number never added is reported absent, except by chance (some 1 in 30
    once a million numbers are in); a number added is always reported present."""

    BITS = 1 << 23
    HASHES = 3

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS // 8)

    def _positions(self, phone: str) -> Iterator[int]:
        digest = hash(phone) & 0xFFFF_FFFF_FFFF_FFFF
        first, step = digest % self.BITS, (digest >> 32) | 1
        return ((first + index * step) % self.BITS for index in range(self.HASHES))

    def add(self, phone: str) -> None:
        for position in self._positions(phone):
            self.bits[position >> 3] |= 1 << (position & 7)

    def __contains__(self, phone: str) -> bool:
        return all(self.bits[position >> 3] & (1 << (position & 7))
                   for position in self._positions(phone))


def _given_before(spec: Mapping[str, Any], rows: Mapping[str, int]) -> set[str]:
    """Which of these numbers the file gives in a row above the one given (phone: row)."""
    if not rows:
        return set()
    last = max(rows.values())
    earlier = set()
    for number, phone, _raw, _name in _file_rows(csv_path(spec), spec):
        if number >= last:
            break
        if phone in rows and number < rows[phone]:
            earlier.add(phone)
    return earlier


def _batches(rows: Iterator[Any]) -> Iterator[list[Any]]:
    while batch := list(islice(rows, CSV_BATCH)):
        yield batch


def file_candidate(audience: Mapping[str, Any], number: int) -> Candidate | None:
    """The row `number` of the audience's file, if the campaign will send to it (a valid
    number the file gives there first)."""
    if "csv" not in audience:
        return None
    spec = audience["csv"]
    if (index := _file_index(spec, build=False)) is not None:
        return index.candidate(number)
    row = next((row for row in _file_rows(csv_path(spec), spec) if row[0] >= number), None)
    if row is None or row[0] != number or row[1] is None:
        return None
    _number, phone, _raw, name = row
    if _given_before(spec, {phone: number}):
        return None
    return _as_candidates([(number, phone, name)])[0]


# A file's index: the preview's search of a file in memory ----------------------------------

INDEX_MAX_ROWS = 200_000  # larger files are streamed on each search (an index of ~20 MiB here)
INDEX_KEPT = 4  # files' indexes each process keeps, the most recently used
INDEX_TTL = 300.0  # seconds: a customer renamed since is found by the new name after that


class _Column:
    """Strings kept as one (a line each, so about a byte or two a character), found by
    `str.find` over them all at once rather than a Python loop over each."""

    def __init__(self, values: list[str]) -> None:
        self.text = "\n".join(values) + "\n"
        self.starts = array("q", accumulate((len(value) + 1 for value in values[:-1]),
                                            initial=0)) if values else array("q")

    def __getitem__(self, index: int) -> str:
        start = self.starts[index]
        return self.text[start:self.text.index("\n", start)]

    def having(self, term: str) -> Iterator[int]:
        """The indexes of the strings that contain `term` (no line break), in order."""
        position = 0
        while (found := self.text.find(term, position)) != -1:
            index = bisect_right(self.starts, found) - 1
            yield index
            position = self.text.index("\n", found) + 1


class _FileIndex:
    """The recipients of an audience file as the freezing keeps them (the first row of each
    valid number), compact: their rows, their numbers (digits) and the names the file gives
    them, and the names the freezing sends, folded as the search folds them (a number the CRM
    knows goes out with its customer's name)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.built_at = time.monotonic()
        self.rows = array("q")
        phones: list[str] = []
        names: list[str] = []
        folded: list[str] = []
        seen: set[str] = set()
        for batch in _batches(_file_rows(csv_path(spec), spec)):
            fresh = [(number, phone, name) for number, phone, _raw, name in batch
                     if phone is not None and not (phone in seen or seen.add(phone))]
            known = dict(db.session.execute(select(Customer.phone, Customer.name).where(
                Customer.phone.in_([phone for _n, phone, _name in fresh]),
                Customer.merged_into_id.is_(None))).all()) if fresh else {}
            for number, phone, name in fresh:
                self.rows.append(number)
                phones.append(phone.lstrip("+"))
                names.append(name)
                folded.append(fold_text(known.get(phone, name)))
        self.phones, self.names, self.folded = _Column(phones), _Column(names), _Column(folded)

    def _row(self, index: int) -> tuple[int, str, str]:
        return self.rows[index], "+" + self.phones[index], self.names[index]

    def candidates(self, limit: int, forms: tuple[str, list[str]] | None) -> list[Candidate]:
        """The first `limit` recipients, or the first matching `forms` (`search_forms`): found
        in the index, then checked against the names the CRM gives them now."""
        if forms is None:
            return _as_candidates([self._row(index)
                                   for index in range(min(limit, len(self.rows)))])
        text, digits = forms
        # Each column's matches in order, merged; a row matched twice is one row.
        found = (index for index, _same in groupby(merge(
            *([self.folded.having(text)] if text else []),
            *(self.phones.having(d) for d in digits))))
        matching: list[Candidate] = []
        while len(matching) < limit and (indexes := list(islice(found, limit))):
            matching += [candidate for candidate in
                         _as_candidates([self._row(index) for index in indexes])
                         if matches(forms, candidate.name, candidate.phone)]
        return matching[:limit]

    def candidate(self, number: int) -> Candidate | None:
        """The recipient of row `number`, if the campaign will send to it."""
        index = bisect_left(self.rows, number)
        if index == len(self.rows) or self.rows[index] != number:
            return None
        return _as_candidates([self._row(index)])[0]


_indexes: OrderedDict[tuple, _FileIndex] = OrderedDict()
_indexes_lock = threading.Lock()


def _file_index(spec: Mapping[str, Any], build: bool) -> _FileIndex | None:
    """The index of the audience file `spec` names, if kept, else read now if `build` (None
    for a file over INDEX_MAX_ROWS). Kept by organization and everything `spec` says: another
    file, or another column chosen for the numbers, is another index."""
    csv_path(spec)  # still there
    if spec.get("rows", 0) > INDEX_MAX_ROWS:
        return None
    key = (current_organization_id(), *sorted(spec.items()))
    with _indexes_lock:
        index = _indexes.get(key)
        if index is not None and time.monotonic() - index.built_at < INDEX_TTL:
            _indexes.move_to_end(key)
            return index
    if not build:
        return None
    index = _FileIndex(spec)
    with _indexes_lock:
        _indexes[key] = index
        _indexes.move_to_end(key)
        while len(_indexes) > INDEX_KEPT:
            _indexes.popitem(last=False)
    return index


def _as_candidates(rows: list[tuple[int, str, str]]) -> list[Candidate]:
    """Rows of a file as the freezing writes them: a number the CRM knows takes its customer's
    variables (and name), another the name the file gives it."""
    known = {customer.phone: customer for customer in db.session.scalars(
        select(Customer).where(Customer.phone.in_([phone for _n, phone, _name in rows]),
                               Customer.merged_into_id.is_(None)))} if rows else {}
    return [replace(customer_candidate(known[phone]), key=number) if phone in known
            else Candidate(number, name, phone, variables_of(name, "", {}))
            for number, phone, name in rows]


def chosen_customers(ids: list[int]) -> list[Customer]:
    """The hand-picked customers of an audience, in the order picked (those still there)."""
    if not ids:
        return []
    found = {customer.id: customer for customer in db.session.scalars(
        select(Customer).where(Customer.id.in_(ids), Customer.merged_into_id.is_(None)))}
    return [found[customer_id] for customer_id in ids if customer_id in found]


def count(audience: Mapping[str, Any]) -> int:
    """How many people an audience names now (before duplicates and invalid numbers)."""
    if "csv" in audience:
        return audience["csv"]["rows"]
    query = customers_query(audience)
    if query is None:
        return 0
    return db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))


def freeze(campaign: Campaign) -> dict[str, int]:
    """Write the campaign's recipients once; how many of each state (queued, skipped)."""
    if "csv" in campaign.audience:
        _freeze_csv(campaign, campaign.audience["csv"])
    else:
        _freeze_customers(campaign)
    return dict(db.session.execute(
        select(CampaignRecipient.state, func.count())
        .where(CampaignRecipient.campaign_id == campaign.id)
        .group_by(CampaignRecipient.state)).all())


def _freeze_customers(campaign: Campaign) -> None:
    query = customers_query(campaign.audience)
    if query is None:
        return
    found = query.subquery()
    without_phone = found.c.phone.is_(None)
    db.session.execute(
        insert(CampaignRecipient).from_select(
            ["organization_id", "campaign_id", "phone", "customer_id", "variables", "state",
             "error_code"],
            select(literal(campaign.organization_id, BigInteger),
                   literal(campaign.id, BigInteger), found.c.phone, found.c.id,
                   _variables(found.c.name, found.c.company, found.c.custom_fields),
                   case((without_phone, "skipped"), else_="queued"),
                   case((without_phone, "no_phone"))))
        .on_conflict_do_nothing(constraint="uq_campaign_recipients_phone"))


def _variables(name, company, custom):
    """rendering.variables_of in SQL: the name, its first word, the company, custom fields."""
    return func.jsonb_build_object(
        "name", name, "first_name", func.split_part(name, " ", 1), "company", company,
        "custom", custom)


def _freeze_csv(campaign: Campaign, spec: Mapping[str, Any]) -> None:
    """Insert the file's rows in batches, then link the numbers the CRM knows to their
    customers (their variables from the CRM)."""
    for batch in _csv_rows(campaign.id, csv_path(spec), spec):
        db.session.execute(insert(CampaignRecipient).values(batch).on_conflict_do_nothing(
            constraint="uq_campaign_recipients_phone"))
    db.session.execute(text("""
        UPDATE campaign_recipients AS r
        SET customer_id = c.id,
            variables = jsonb_build_object('name', c.name,
                                           'first_name', split_part(c.name, ' ', 1),
                                           'company', c.company, 'custom', c.custom_fields)
        FROM customers AS c
        WHERE r.campaign_id = :campaign_id AND r.phone IS NOT NULL AND c.phone = r.phone
          AND c.merged_into_id IS NULL"""), {"campaign_id": campaign.id})


def _file_rows(path: Path, spec: Mapping[str, Any]
               ) -> Iterator[tuple[int, str | None, str, str]]:
    """Each row of an audience file under its header but blank lines: its number (from 1),
    its phone in E.164 (None when not valid), what its phone column said, its name."""
    region = current_organization().country
    rows = open_csv(path, Reading(spec["encoding"], spec["delimiter"]))
    if spec["header"]:
        next(rows, None)
    phone_column, name_column = spec["phone_column"], spec.get("name_column")
    for number, row in enumerate(rows, 1):
        row = [cell.replace("\x00", "") for cell in row]  # PostgreSQL cannot store a NUL
        raw = row[phone_column].strip() if len(row) > phone_column else ""
        if not raw and not any(cell.strip() for cell in row):
            continue  # a blank line
        name = (" ".join(row[name_column].split())[:160]
                if name_column is not None and len(row) > name_column else "")
        yield number, normalize_phone(raw, region), raw, name


def _csv_rows(campaign_id: int, path: Path, spec: Mapping[str, Any]
             ) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for _number, phone, raw, name in _file_rows(path, spec):
        batch.append({
            "organization_id": current_organization_id(), "campaign_id": campaign_id,
            "phone": phone,
            "raw_phone": None if phone else (raw[:64] or None),
            "variables": variables_of(name, "", {}),
            "state": "queued" if phone else "skipped",
            "error_code": None if phone else ("invalid_phone" if raw else "no_phone")})
        if len(batch) == CSV_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
