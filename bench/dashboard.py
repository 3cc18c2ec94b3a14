"""`crm bench dashboard`: the dashboard of the benchmarks' largest organization, for its admin
(the team's numbers) and for an agent (their own), beside bare Flask + one indexed SELECT.

The organization holds the largest organization of `crm bench customers`
(BENCH_DASHBOARD_CUSTOMERS, 191,216 customers, with expected values and tasks) and ten times
an organization of `crm bench inbox` (BENCH_DASHBOARD_CONVERSATIONS, 10,000 conversations;
BENCH_DASHBOARD_MESSAGES, 100,000 messages, one every three minutes) and of `crm bench
tickets` (BENCH_DASHBOARD_TICKETS, 100,000 tickets in every status and SLA state), made with the
same set-based SQL as the schema owner. Checked first: the admin's and the agent's cards equal
a recount of the lists they link to (the counters' triggers saw those INSERTs). Measured: the
whole dashboard page (session, HTML), its cards alone (what a live refresh fetches) and the
Inbox's unread badge, in alternating rounds; then the time of each SQL statement of a dashboard
(the median of 21), the target (p95 under 50 ms), and what the counters' triggers add to the
writes of the hot paths.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager

import psycopg
from flask import Flask
from sqlalchemy import event

from bench.common import (
    AR_FIRST,
    AR_LAST,
    EN_FIRST,
    EN_LAST,
    baseline_app,
    bench_app,
    check,
    create_organizations,
    credentials,
    measure_alternating,
    one_line,
    owner_dsn,
    report,
    set_organization,
    sign_in,
)
from bench.customers import (
    COMPANIES,
    CUSTOMERS_SQL,
    DOMAINS,
    LATIN,
    NOTES,
    RARE_TAG,
    TAGS,
)
from bench.customers import PHONE_PREFIXES as CUSTOMER_PREFIXES
from bench.inbox import (
    CONVERSATIONS_SQL,
    INBOUND_TEXTS,
    MESSAGES_SQL,
    OUTBOUND_TEXTS,
    PHONE_PREFIXES,
    PROFILE_SQL,
    SUMMARY_SQL,
)
from bench.tickets import COUNTER_SQL, SUBJECTS, TICKETS_SQL

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 500))
CUSTOMERS = int(os.environ.get("BENCH_DASHBOARD_CUSTOMERS", 191_216))
CONVERSATIONS = int(os.environ.get("BENCH_DASHBOARD_CONVERSATIONS", 10_000))
MESSAGES = int(os.environ.get("BENCH_DASHBOARD_MESSAGES", 100_000))
TICKETS = int(os.environ.get("BENCH_DASHBOARD_TICKETS", 100_000))
TARGET_P95_MS = 50.0
STATEMENT_RUNS = 21  # dashboards timed statement by statement

# Values for every customer; a task for one in five, its due date within a month either way
# of now, one in ten of them done (the dashboard counts the open ones due today and overdue).
VALUES_SQL = """
UPDATE customers SET expected_value = round((random() * 50000)::numeric, -1)
WHERE organization_id = %(org)s"""
TASKS_SQL = """
INSERT INTO customer_activities (organization_id, customer_id, type, body, due_at, assignee_id,
                                 actor_id, done_at)
SELECT %(org)s, c.id, 'task', 'Call back', now() + (random() - 0.5) * interval '60 days',
       coalesce(c.owner_id, team.ids[1]), team.ids[1],
       CASE WHEN random() < 0.1 THEN now() END
FROM customers c, (SELECT array_agg(id ORDER BY id) AS ids FROM users
                   WHERE organization_id = %(org)s) team
WHERE c.organization_id = %(org)s AND random() < 0.2"""


# What the cards' counters must equal: the lists they link to, counted from the rows (the
# bench's data is made by SQL INSERTs, which the counters' triggers see too).
RECOUNT_SQL = {
    "inbox": """
SELECT count(*) FILTER (WHERE status = 'open'),
       count(*) FILTER (WHERE status = 'open' AND assigned_user_id IS NULL),
       count(*) FILTER (WHERE unread_count > 0),
       count(*) FILTER (WHERE status = 'open' AND assigned_user_id = :user)
FROM conversations WHERE status <> 'resolved' AND last_message_at IS NOT NULL
  AND (NOT :own OR assigned_user_id = :user)""",
    "tickets": """
SELECT count(*) FILTER (WHERE status = 'open'),
       count(*) FILTER (WHERE assignee_id IS NULL AND status IN ('open', 'pending', 'on_hold')),
       count(*) FILTER (WHERE assignee_id = :user AND status IN ('open', 'pending', 'on_hold')),
       count(*) FILTER (WHERE sla_status = 'warning'),
       count(*) FILTER (WHERE sla_status = 'breached')
FROM tickets WHERE NOT :own OR assignee_id = :user""",
    "tasks": """
SELECT count(*) FILTER (WHERE due_at >= :today), count(*) FILTER (WHERE due_at < :today)
FROM customer_activities WHERE type = 'task' AND done_at IS NULL AND due_at < :tomorrow
  AND (NOT :own OR assignee_id = :user)""",
}


# What the counters' triggers add to a write: single-row statements of the hot paths, each
# its own transaction, with the counter's triggers (crm/schema.py `keep_counts`) enabled and
# disabled in turn.
WRITES = {
    "a message bumps a conversation (no count moves)": (
        "conversations", "inbox_counts",
        "UPDATE conversations SET last_message_at = now(), unread_count = unread_count + 1 "
        "WHERE id = (SELECT id FROM conversations WHERE organization_id = %(org)s "
        "AND unread_count > 0 ORDER BY id OFFSET %(k)s LIMIT 1)"),
    "a conversation read (its count moves)": (
        "conversations", "inbox_counts",
        "UPDATE conversations SET unread_count = (unread_count = 0)::int "
        "WHERE id = (SELECT id FROM conversations WHERE organization_id = %(org)s "
        "AND status = 'open' ORDER BY id OFFSET %(k)s LIMIT 1)"),
    "a ticket set pending / open (its count moves)": (
        "tickets", "ticket_counts",
        "UPDATE tickets SET status = CASE status WHEN 'open' THEN 'pending' ELSE 'open' END "
        "WHERE id = (SELECT id FROM tickets WHERE organization_id = %(org)s "
        "AND status IN ('open', 'pending') ORDER BY id OFFSET %(k)s LIMIT 1)"),
    "a task added": (
        "customer_activities", "task_counts",
        "INSERT INTO customer_activities (organization_id, customer_id, type, body, due_at) "
        "SELECT %(org)s, id, 'task', 'Call back', now() + interval '1 day' FROM customers "
        "WHERE organization_id = %(org)s ORDER BY id OFFSET %(k)s LIMIT 1"),
}
WRITE_ROUNDS, WRITES_PER_ROUND = 5, 200


def run() -> None:
    app = bench_app()
    org = load(app)
    check_counts(app, org)
    baseline_client = baseline_app(app.config["DATABASE_URL"]).test_client()
    measure(app, baseline_client, org)
    measure_writes(app, org)


def load(app: Flask) -> int:
    """The organization, its pipeline, customers, tasks, inbox and tickets; VACUUM ANALYZE."""
    from crm.customers import services
    from crm.tenancy import organization_context
    from crm.tickets import services as tickets
    from crm.transaction import commit

    start = time.perf_counter()
    with psycopg.connect(owner_dsn(app)) as conn:
        [org] = list(create_organizations(conn, 1))
    with app.app_context(), organization_context(org):
        services.ensure_default_stages()
        tickets.ensure_defaults()
        commit()
    with psycopg.connect(owner_dsn(app)) as conn:
        conn.execute("SET gin_pending_list_limit = '64MB'")
        conn.execute("SELECT setseed(0.42)")
        set_organization(conn, org)
        conn.execute(CUSTOMERS_SQL, {
            "org": org, "n": CUSTOMERS, "k": 0, "orgs": 1, "span": CUSTOMERS,
            "ar_first": AR_FIRST, "ar_last": AR_LAST,
            "latin_first": [LATIN[name] for name in AR_FIRST],
            "latin_last": [LATIN[name] for name in AR_LAST], "en_first": EN_FIRST,
            "en_last": EN_LAST, "prefixes": CUSTOMER_PREFIXES, "domains": DOMAINS,
            "companies": COMPANIES, "tags": TAGS, "rare_tag": RARE_TAG, "notes": NOTES})
        conn.execute("SELECT setval(pg_get_serial_sequence('customers', 'id'), %s)",
                     (CUSTOMERS,))
        conn.execute(VALUES_SQL, {"org": org})
        conn.execute(TASKS_SQL, {"org": org})
        profile = conn.execute(PROFILE_SQL, {"org": org}).fetchone()[0]
        params = {"org": org, "profile": profile, "n": CONVERSATIONS, "m": MESSAGES,
                  "prefixes": PHONE_PREFIXES, "ar_first": AR_FIRST, "ar_last": AR_LAST,
                  "en_first": EN_FIRST, "en_last": EN_LAST, "inbound": INBOUND_TEXTS,
                  "outbound": OUTBOUND_TEXTS}
        for statement in (CONVERSATIONS_SQL, MESSAGES_SQL, SUMMARY_SQL):
            conn.execute(statement, params)
        conn.execute(TICKETS_SQL, {"org": org, "n": TICKETS, "subjects": SUBJECTS})
        conn.execute(COUNTER_SQL, {"org": org, "n": TICKETS})
    loaded = time.perf_counter()
    with psycopg.connect(owner_dsn(app), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE customers, customer_activities, pipeline_totals, "
                     "conversations, messages, tickets")
    print(f"\ngenerated one organization: {CUSTOMERS:,} customers with values and tasks, "
          f"{CONVERSATIONS:,} conversations, {MESSAGES:,} messages, {TICKETS:,} tickets in "
          f"{loaded - start:.1f} s "
          f"(+ VACUUM ANALYZE {time.perf_counter() - loaded:.1f} s)")
    return org


def measure_writes(app: Flask, org: int) -> None:
    """The median time of each write with its counter's triggers and without, alternating."""
    timings = {(name, on): [] for name in WRITES for on in (True, False)}
    with psycopg.connect(owner_dsn(app), autocommit=True) as conn:
        conn.execute("SELECT set_config('app.current_organization_id', %s, false)", (str(org),))
        k = 0
        for _round in range(WRITE_ROUNDS):
            for name, (table, counts, statement) in WRITES.items():
                for on in (True, False):
                    for event_ in ("insert", "update", "delete"):
                        conn.execute(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} "
                                     f"TRIGGER {table}_{counts}_{event_}")
                    for _n in range(WRITES_PER_ROUND):
                        k += 1
                        start = time.perf_counter()
                        conn.execute(statement, {"org": org, "k": k % 1000})
                        timings[name, on].append(time.perf_counter() - start)
        for table, counts, _statement in WRITES.values():
            for event_ in ("insert", "update", "delete"):
                conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_{counts}_{event_}")
    print(f"\nwhat the counters add to a write ({WRITE_ROUNDS} x {WRITES_PER_ROUND} "
          "single-row statements each, autocommitted, as the schema owner):")
    print(f"{'write':50} {'with ms':>8} {'without':>8} {'added':>8}")
    for name in WRITES:
        on, off = (statistics.median(timings[name, on]) * 1000 for on in (True, False))
        print(f"{name:50} {on:8.3f} {off:8.3f} {on - off:8.3f}")


def check_counts(app: Flask, org: int) -> None:
    """The numbers the admin's and the agent's cards show are those of a recount."""
    from sqlalchemy import select, text

    from crm.customers.services import task_counts
    from crm.customers.services.activities import today_bounds
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.tickets.dashboard import ticket_numbers
    from crm.whatsapp.dashboard import inbox_numbers

    with app.app_context(), organization_context(org):
        today, tomorrow = today_bounds()
        for role in ("admin", "agent"):
            user = db.session.scalar(select(User).where(User.role == role).order_by(User.id)
                                     .limit(1))
            own = role == "agent"
            params = {"user": user.id, "own": own, "today": today, "tomorrow": tomorrow}
            inbox, tickets = inbox_numbers(user), ticket_numbers(user)
            tasks = task_counts(user.id if own else None)
            shown = {"inbox": (inbox.open, inbox.unassigned, inbox.unread, inbox.mine),
                     "tickets": (tickets.open, tickets.unassigned, tickets.mine,
                                 tickets.breaching, tickets.breached),
                     "tasks": (tasks["today"], tasks["overdue"])}
            for card, sql in RECOUNT_SQL.items():
                recount = tuple(db.session.execute(text(sql), params).one())
                assert all(n is None or n == recounted
                           for n, recounted in zip(shown[card], recount, strict=True)), (
                    role, card, shown[card], recount)
            print(f"the {role}'s cards equal a recount: " + "; ".join(
                f"{card} {shown[card]}" for card in RECOUNT_SQL))


def _sessions(org: int) -> dict[str, str]:
    """A login session of the organization's admin and of its first agent."""
    from sqlalchemy import select

    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context

    with organization_context(org):
        users = {role: db.session.scalar(select(User).where(User.role == role)
                                         .order_by(User.id).limit(1))
                 for role in ("admin", "agent")}
        return {role: credentials(user)[1] for role, user in users.items()}


def measure(app: Flask, baseline_client, org: int) -> None:
    with app.app_context():
        sessions = _sessions(org)
    clients = {}
    for role, credential in sessions.items():
        clients[role] = app.test_client()
        sign_in(clients[role], credential)
    htmx = {"HX-Request": "true"}

    def get(role: str, path: str, headers: dict | None = None) -> Callable[[], object]:
        return lambda: check(clients[role].get(path, headers=headers or {}))

    results = measure_alternating({
        "bare Flask + 1 indexed SELECT": lambda: check(baseline_client.get("/baseline/1259")),
        "dashboard page (admin, HTML)": get("admin", "/"),
        "dashboard page (agent, HTML)": get("agent", "/"),
        "dashboard cards (admin, live refresh)": get("admin", "/dashboard/cards", htmx),
        "Inbox's unread badge (admin)": get("admin", "/inbox/unread-badge", htmx),
    }, REQUESTS)
    report(f"dashboard — {CUSTOMERS:,} customers, {CONVERSATIONS:,} conversations, "
           f"{MESSAGES:,} messages, {TICKETS:,} tickets in one organization; "
           f"{REQUESTS} sequential requests each (session, in-process WSGI), alternating rounds",
           results[1:], results[0], tail=95)
    for result in results[1:]:
        verdict = "ok" if result.pct(95) < TARGET_P95_MS else "MISSED"
        print(f"  {result.name}: p95 {result.pct(95):.2f} ms, target {TARGET_P95_MS:.0f} ms: "
              f"{verdict}")
    for role in ("admin", "agent"):
        runs = []
        for _n in range(STATEMENT_RUNS):
            with statements_timed(app) as timed:
                get(role, "/")()
            runs.append(timed)
        # The dashboard's statements are pinned: the same ones in the same order each time.
        timed = [(statistics.median(run[n][0] for run in runs), statement)
                 for n, (_ms, statement) in enumerate(runs[0])]
        print(f"\nthe {role}'s dashboard: {len(timed)} statements, "
              f"{sum(ms for ms, _ in timed):.2f} ms in SQL (each the median of "
              f"{STATEMENT_RUNS} dashboards)")
        for ms, statement in sorted(timed, reverse=True)[:6]:
            print(f"  {ms:7.2f} ms  {one_line(statement)[:140]}")


@contextmanager
def statements_timed(app: Flask):
    """(ms, statement) of each SQL statement the app sends inside the block."""
    from crm.extensions import db

    with app.app_context():
        engine = db.engine
    timed: list[tuple[float, str]] = []
    started: dict[int, float] = {}

    def before(_conn, cursor, _statement, _parameters, _context, _many) -> None:
        started[id(cursor)] = time.perf_counter()

    def after(_conn, cursor, statement, _parameters, _context, _many) -> None:
        timed.append(((time.perf_counter() - started.pop(id(cursor))) * 1000, statement))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield timed
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
