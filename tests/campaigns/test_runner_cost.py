"""What sending costs the database: the runner writes and settles its recipients in chunks,
with a constant number of statements per chunk beside the outbox's few per message, so the
SQL per message does not stand between a number and its throughput (docs/PERFORMANCE.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from crm.extensions import db
from tests.campaigns.factories import cloud_number, counts, make_template, start
from tests.campaigns.test_pacing import csv_campaign
from tests.factories import run_jobs

PEOPLE = 40  # one chunk at the default 80 messages a second


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every statement sent to the database inside the block (the organization's setting,
    which each transaction starts with, and the savepoints that stand for commits in tests,
    aside)."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "set_config" not in statement and "SAVEPOINT" not in statement:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_a_chunk_of_sends_costs_a_few_statements_per_message(app, org, number, graph, clock):
    """Forty recipients sent in one slice of the runner: at most ten statements a message
    (the outbox's claim and answer under the campaign's share lock, about six; the open
    inboxes told of each message sent and of its status, the message with its conversation
    and assignee read in one query each time) and a few dozen for the whole slice (its list
    frozen, the chunk written, settled and counted), where sending one recipient at a time
    ran 1,241 for the forty."""
    campaign = csv_campaign(org, number, PEOPLE)
    start(org, campaign)

    with statements() as seen:
        run_jobs(app, queues=("campaigns",))

    assert len(graph.sends()) == PEOPLE
    assert counts(org, campaign)["sent"] == PEOPLE
    assert len(seen) <= 10 * PEOPLE + 20, "\n".join(line.split("\n")[0] for line in seen)
