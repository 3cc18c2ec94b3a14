"""Versions of what people edit, so that an edit made on a stale copy is refused instead of
silently undoing someone else's.

A versioned row counts the edits people make to it (`version`) and remembers who made the
last one and when (`edited_by_id`, `edited_at`; `updated_at` moves whenever anything is
written, a score or a new message too). What the system writes by itself (unread counts,
previews, scores, the last contact) leaves the version alone: only a person's edit can make
another person's copy stale.

A service that edits takes an `expected_version` (the API's If-Match, a form's hidden field),
calls `lock_for_edit()` first, which locks the row and reads it afresh, and `check_version()`
once the edit's fields are checked: of two requests that started from the same version, the
second waits for the first to commit, then finds the version moved and is refused
(`StaleVersionError`, carrying the row as it is now). Without an
expected version the edit goes through, on the fresh row: what it merges (tags added, one
custom field) merges into what others saved, never into a copy read earlier.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from flask_babel import gettext as _
from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, select
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from crm.errors import ConflictError
from crm.extensions import db
from crm.models import utcnow

if TYPE_CHECKING:
    from crm.foundation.models import User

# The versions an edit may start from: one (a form), several (an If-Match list), or None for
# any (no If-Match, or *).
Expected = int | Collection[int] | None


class VersionedMixin:
    """A row people edit: its version, and who edited it last and when."""

    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @declared_attr
    def edited_by_id(cls) -> Mapped[int | None]:  # noqa: N805 - declared_attr receives the class
        return mapped_column(BigInteger, ForeignKey("users.id", ondelete="SET NULL"))

    @declared_attr
    def edited_by(cls) -> Mapped[User | None]:  # noqa: N805
        return relationship("User", foreign_keys=lambda: [cls.edited_by_id])


V = TypeVar("V", bound=VersionedMixin)


class StaleVersionError(ConflictError):
    """Someone edited the row since the version the edit started from (412 on the API)."""

    status = 412
    code = "stale_version"

    def __init__(self, current: VersionedMixin):
        super().__init__(_("Someone changed this since you read it. `current` is what it is "
                           "now: apply your change to it, or send it without If-Match to "
                           "overwrite."))
        self.current = current


def lock_for_edit(row: V) -> V:
    """Lock `row` until the transaction ends and read it afresh.

    The lock makes two edits of one row take turns, so the second sees what the first saved.
    Changes made to `row` before are flushed first (the query flushes them), not lost.
    """
    model = type(row)
    return db.session.execute(select(model).where(model.id == row.id).with_for_update()
                              .execution_options(populate_existing=True)).scalar_one()


def check_version(row: VersionedMixin, expected: Expected) -> None:
    """Raise StaleVersionError when `row` (locked) is at none of the `expected` versions.

    Services check the fields of an edit first, so that a mistake in them is told (422)
    whatever the version.
    """
    if expected is not None and row.version not in _as_set(expected):
        raise StaleVersionError(row)


def _as_set(expected: int | Collection[int]) -> Collection[int]:
    return (expected,) if isinstance(expected, int) else expected


def record_edit(row: VersionedMixin, actor: User | None) -> None:
    """Count an edit of `row` by `actor`: the next version, who and when.

    The version is counted in SQL, so it is right even for a row that was not locked.
    """
    row.version = type(row).version + 1
    row.edited_at = utcnow()
    row.edited_by_id = actor.id if actor else None
    db.session.flush()


def edit_values(model: type[VersionedMixin], actor: User | None) -> dict[str, Any]:
    """What a bulk UPDATE of people's edits sets besides its own columns."""
    return {"version": model.version + 1, "edited_at": utcnow(),
            "edited_by_id": actor.id if actor else None}


def form_version(raw: str | None) -> int | None:
    """The version a form was rendered with; None when it names none (a page older than
    versions), 0 (never a version) when it names something else."""
    if not raw:
        return None
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 0
