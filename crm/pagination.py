"""Keyset pagination, written once for every list: fetch one row more than the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select

from crm.extensions import db

Row = TypeVar("Row")


def keyset_page(query: Select, limit: int, key: Callable[[Row], Any]
                ) -> tuple[list[Row], Any | None]:
    """The first `limit` rows of `query`, and the next page's key — `key` of the page's last
    row — or None when this is the last page (the one extra row fetched tells)."""
    rows = list(db.session.scalars(query.limit(limit + 1)))
    page = rows[:limit]
    return page, (key(page[-1]) if len(rows) > limit else None)
