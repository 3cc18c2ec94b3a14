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
import uuid
from collections.abc import Iterator, Mapping
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
from crm.search import normalize_phone
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
    if not path.is_relative_to(folder) or path == folder:
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


def sample(audience: Mapping[str, Any], limit: int) -> list[Customer]:
    """The audience's first customers now (none for a CSV file, or a deleted segment): whom
    a page offers to preview the message for."""
    try:
        query = customers_query(audience) if audience else None
    except NotFoundError:
        return []
    return list(db.session.scalars(query.limit(limit))) if query is not None else []


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


def _csv_rows(campaign_id: int, path: Path, spec: Mapping[str, Any]
             ) -> Iterator[list[dict[str, Any]]]:
    region = current_organization().country
    rows = open_csv(path, Reading(spec["encoding"], spec["delimiter"]))
    if spec["header"]:
        next(rows, None)
    batch: list[dict[str, Any]] = []
    for row in rows:
        row = [cell.replace("\x00", "") for cell in row]  # PostgreSQL cannot store a NUL
        raw = row[spec["phone_column"]].strip() if len(row) > spec["phone_column"] else ""
        name_column = spec.get("name_column")
        name = (" ".join(row[name_column].split())[:160]
                if name_column is not None and len(row) > name_column else "")
        if not raw and not any(cell.strip() for cell in row):
            continue  # a blank line
        phone = normalize_phone(raw, region)
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
