"""One transaction per request, job or socket event, committed by the framework, never by views.

Side effects (Socket.IO emits, RQ enqueues, event subscribers, anything that leaves the
building) are queued with `on_commit()` and run only once the transaction has committed, so a
rolled-back request never announces anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

from crm.extensions import db

log = logging.getLogger("crm.transaction")
_CALLBACKS = "on_commit_callbacks"
_COLLECTED = "on_commit_collected"
_KEEP_ON_ERROR = "keep_on_error"


def on_commit(callback: Callable[[], None]) -> None:
    """Run `callback` after the current transaction commits; drop it if it rolls back."""
    db.session.info.setdefault(_CALLBACKS, []).append(callback)


def on_commit_collect(key: str, item: object, flush: Callable[[list], None]) -> None:
    """Add `item` to this unit of work's `key` list; after commit, `flush` gets the whole list
    at once (many events of one batch, their jobs enqueued in one Redis round trip)."""
    collected = db.session.info.setdefault(_COLLECTED, {})
    if key not in collected:
        collected[key] = []
        on_commit(lambda: flush(collected.pop(key)))
    collected[key].append(item)


def commit() -> None:
    """Commit the unit of work, then run what waited for it."""
    session = db.session()
    session.commit()
    _run_callbacks(session)


def rollback() -> None:
    """Roll the unit of work back and drop what waited for its commit.

    The listener below drops them when a transaction was open; this also covers a unit of
    work that queued a side effect before it touched the database.
    """
    db.session.rollback()
    db.session.info.pop(_CALLBACKS, None)
    db.session.info.pop(_COLLECTED, None)


def keep_on_error() -> None:
    """Commit this unit of work even though the answer is an error (a failure to record)."""
    db.session.info[_KEEP_ON_ERROR] = True


def kept_on_error() -> bool:
    """Was keep_on_error() called in this unit of work? Asking resets it."""
    return db.session.info.pop(_KEEP_ON_ERROR, False)


def _run_callbacks(session: Session) -> None:
    while callbacks := session.info.pop(_CALLBACKS, []):
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback %r failed", callback)


@event.listens_for(Session, "after_soft_rollback")
def _forget_callbacks(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None and not previous_transaction.nested:
        session.info.pop(_CALLBACKS, None)
        session.info.pop(_COLLECTED, None)
        session.info.pop(_KEEP_ON_ERROR, None)
