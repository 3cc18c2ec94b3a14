"""Customer lists: their filters, sorts, search and keyset cursors (pages, the API, segments,
exports and campaigns share them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Row,
    Text,
    cast,
    exists,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import InstrumentedAttribute, joinedload
from sqlalchemy.sql import ColumnElement, Select

from crm.customers.models import SOURCES, Customer
from crm.customers.services.fields import (
    check_custom_value,
    check_id,
    check_int,
    check_text,
    field_definitions_by_key,
)
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import current_organization
from crm.pagination import CursorType, decode_cursor, encode_cursor, keyset_page
from crm.search import search_terms
from crm.validation import collect

SCORE_LIMIT = 1_000_000
SORTS = ("newest", "oldest", "name", "score", "last_contacted")
# A paged search first reads this many customers per row of the page in the list's order (an
# index scan), before it asks the GIN indexes for rarer matches (crm/search.py).
PAGE_SCAN = 100


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


def owners_to_filter(limit: int) -> list[User]:
    """Whom the owner filter offers: the team's active members, then the members since
    removed who still own customers (one query, however many customers they own)."""
    owns = exists().where(Customer.owner_id == User.id)
    return list(db.session.scalars(select(User).where(or_(User.is_active, owns))
                                   .order_by(User.is_active.desc(), User.id).limit(limit)))


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
_CURSOR_TYPES: dict[str, tuple[CursorType, ...]] = {
    "newest": (int,), "oldest": (int,), "name": (str, int), "score": (int, int),
    "last_contacted": ((datetime, type(None)), int),
}
# What the search function takes from a cursor, besides the id (crm/search.py).
_CURSOR_FIELDS = {"newest": (), "oldest": (), "name": ("name",), "score": ("score",),
                  "last_contacted": ("contacted",)}


def filtered_query(filters: CustomerFilters) -> Select:
    """The customers `filters` selects, sorted (campaigns build recipient lists on it)."""
    return select(Customer).where(*_conditions(filters)).order_by(*_ORDER[filters.sort])


def list_customers(filters: CustomerFilters, after: str | None = None, limit: int = 50, *,
                   related: bool = False, columns: Sequence[InstrumentedAttribute] = ()
                   ) -> tuple[list[Customer] | list[Row], str | None]:
    """A page of customers and the opaque cursor of the next page (None on the last).

    `related` loads each one's owner and stage with it, for pages that show them; the API
    answers their ids only, and joining them tripled the cost of loading a page of 50.
    Given `columns` (they include the sort's), the page is rows of those columns, not
    Customer objects: the API answers a row as it is, and building 50 objects a page cost
    more than its SQL.
    """
    key = decode_cursor(after, filters.sort, _CURSOR_TYPES[filters.sort])
    query = (select(*columns or (Customer,)).where(*_conditions(filters, (key, limit + 1)))
             .order_by(*_ORDER[filters.sort]))
    if related:
        query = query.options(joinedload(Customer.owner), joinedload(Customer.stage))
    if key:
        query = query.where(_after(filters.sort, key))
    return keyset_page(query, limit, lambda last: _cursor_for(filters.sort, last),
                       as_rows=bool(columns))


def _after(sort: str, key: tuple) -> ColumnElement[bool]:
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


def _cursor_for(sort: str, customer: Customer | Row) -> str:
    key = {"newest": (), "oldest": (), "name": (customer.name,), "score": (customer.score,),
           "last_contacted": (customer.last_contacted_at,)}[sort]
    return encode_cursor(sort, (*key, customer.id))


def count_customers(filters: CustomerFilters) -> int:
    """How many customers `filters` selects (a segment's live count)."""
    return db.session.scalar(select(func.count()).select_from(Customer)
                             .where(*_conditions(filters)))
