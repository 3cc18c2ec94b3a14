"""What sending costs the database: the runner writes and settles its recipients in chunks,
with a constant number of statements per chunk beside the outbox's few per message, so the
SQL per message does not stand between a number and its throughput (docs/PERFORMANCE.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import pytest
from sqlalchemy import event

from crm.campaigns import pacing
from crm.extensions import db
from tests.campaigns.factories import cloud_number, counts, make_template, recipients, start
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
    """Forty recipients sent in one slice of the runner: at most four statements a message
    (WhatsApp answering at once, each leaves alone, as the pace needs no more on their way:
    the answers come back since the last send read and written, one query each, the
    campaign's share lock, and the claim in the outbox; with slower answers one group of
    several costs these four), and a few dozen for the whole slice (its list frozen, the
    chunk written, settled and counted; the open inboxes — none here — read nothing), where
    sending one recipient at a time ran 1,241 for the forty, and a chunk sent one message
    at a time, each claimed and answered on its own, 401."""
    campaign = csv_campaign(org, number, PEOPLE)
    start(org, campaign)

    with statements() as seen:
        run_jobs(app, queues=("campaigns",))

    assert len(graph.sends()) == PEOPLE
    assert counts(org, campaign)["sent"] == PEOPLE
    assert len(seen) <= 4 * PEOPLE + 50, "\n".join(line.split("\n")[0] for line in seen)


def test_slow_answers_have_several_sends_on_their_way_at_once(app, org, number, graph,
                                                             monkeypatch):
    """WhatsApp answering each send after 0.2 s, one send at a time could not keep 80 a
    second: several leave while others wait for their answer (sends arrive less than a
    request's time apart), never more at once than CAMPAIGN_SENDS_IN_FLIGHT (no more arrive
    within a request's time), and everyone gets one message."""
    monkeypatch.setattr(pacing, "clock", pacing.Clock())  # answers take real time
    monkeypatch.setitem(app.config, "CAMPAIGN_SENDS_IN_FLIGHT", 6)
    graph.delay = 0.2
    arrivals: list[float] = []
    record = graph._record
    monkeypatch.setattr(graph, "_record", lambda: arrivals.append(time.monotonic()) or record())
    campaign = csv_campaign(org, number, PEOPLE)
    start(org, campaign)

    run_jobs(app, queues=("campaigns",))

    assert sorted(body["to"] for body in graph.sends()) == sorted(
        r.phone.lstrip("+") for r in recipients(org, campaign))
    assert counts(org, campaign)["sent"] == PEOPLE
    assert min(later - earlier for earlier, later in pairwise(arrivals)) < graph.delay
    assert max(sum(1 for other in arrivals if moment <= other < moment + 0.19)
               for moment in arrivals) <= 6
