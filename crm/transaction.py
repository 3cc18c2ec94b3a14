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


def on_commit(callback: Callable[[], None]) -> None:
    """Run `callback` after the current transaction commits; drop it if it rolls back."""
    db.session.info.setdefault(_CALLBACKS, []).append(callback)


def commit() -> None:
    """Commit the unit of work, then run what waited for it."""
    session = db.session()
    session.commit()
    _run_callbacks(session)


def rollback() -> None:
    db.session.rollback()


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
