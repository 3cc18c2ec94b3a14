"""Pinning the SQL a request reads, so an N+1 fails a test the day it appears (DESIGN.md: no
query per row; tests pin the number of queries of each list and fragment)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from crm.extensions import db


@contextmanager
def count_queries() -> Iterator[list[str]]:
    """Record the queries run inside the block, in order.

    Only reads count: transaction plumbing (savepoints, the organization setting each
    transaction starts with) is the same for every request, and a read's bookkeeping writes
    (a session's last-seen time, touched once a while) come and go with the clock, never
    with the data.
    """
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith(("SELECT", "WITH")) and "set_config" not in statement:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


@contextmanager
def assert_max_queries(n: int) -> Iterator[list[str]]:
    """Fail when the block runs more than `n` queries (as count_queries() counts them)."""
    with count_queries() as statements:
        yield statements
    assert len(statements) <= n, "\n".join(statements)
