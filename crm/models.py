"""Column helpers shared by every module's models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, ColumnElement, DateTime, cast, func
from sqlalchemy.orm import Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def id_column() -> Mapped[int]:
    return mapped_column(BigInteger, primary_key=True)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(),
                         default=utcnow)


def counted(n: ColumnElement[int], *conditions: ColumnElement[bool]) -> ColumnElement[int]:
    """The sum of a counter column `n` over the rows that match `conditions`: 0 when none, an
    integer (a bare sum of bigints is numeric)."""
    return cast(func.coalesce(func.sum(n).filter(*conditions), 0), BigInteger)
