"""Segments: a filter of the customer list saved under a name (campaigns send to segments).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import select

from crm.customers.models import Customer, Segment
from crm.customers.services.fields import check_text, not_found
from crm.customers.services.search import CustomerFilters, list_customers, parse_filters
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.tenancy import get_in_organization
from crm.validation import collect


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
