"""`crm bench tickets`: the ticket views on a million tickets, the SLA timer's cost as open
tickets grow, and a hundred thousand deadlines in the same hour.

1. Data: BENCH_TICKETS tickets (1,000,000) across BENCH_ORGS organizations (100), evenly, made
   with set-based SQL (INSERT ... SELECT generate_series) as the schema owner, each
   organization's rows in a transaction set to it (RLS is FORCEd). Each organization has its
   ticketing defaults made by the services (types, policies, hours, holidays), 10 people (8
   agents) and BENCH_CUSTOMERS_PER_ORG customers. Statuses, assignees, priorities and SLA
   states are spread as a support team's are: a third open, a tenth pending, a sixth solved,
   the rest closed; 30% unassigned; 5% of the open past a warning, 10% breached. Every
   deadline lies a day or more ahead, so nothing comes due while the views are measured.
   The whole is loaded twice: a tenth first, then all of it (to show what grows).
2. Views: GET /api/tickets (bearer, JSON) — all, mine (an agent), unassigned, breaching,
   breached, a search by a common word, by a customer's name, by a number — first page and
   a deep cursor (half way down the list), in alternating rounds beside bare Flask + one
   indexed SELECT; EXPLAIN (ANALYZE, BUFFERS) of the statement each pages with, checked
   against the index it needs.
3. Sweep: BENCH_DUE (1,000) tickets across the organizations come due (a warned first
   response at its due moment); the timer (crm/tickets/jobs.py process_due) breaches them
   in this process. Measured with a tenth of the tickets open, then all: the time should
   follow what is due, not what is open.
4. Same hour: BENCH_SAME_HOUR (100,000) deadlines across the organizations, all due at once
   (the worst case of "in the same hour"): the timer's throughput, and so how late the last
   one would be. Then a real-time run: deadlines spread over BENCH_REALTIME_SECONDS (60) at
   the rate of BENCH_RATE_PER_HOUR (100,000) an hour, a timer loop in this process waking at
   the earliest deadline as RQ's scheduler would (without its polling and forking), and each
   breach's delay after its due moment (its timeline entry).

BENCH_SCALE (1) multiplies the ticket, due and same-hour counts: BENCH_SCALE=0.1 is the run a
shared 2-core machine finishes in minutes.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from flask import Flask

from bench.common import (
    AR_FIRST,
    AR_LAST,
    BENCH_DATABASE,
    EN_FIRST,
    EN_LAST,
    Result,
    Scenario,
    baseline_app,
    bench_app,
    check,
    check_plan,
    create_organizations,
    credentials,
    measure_alternating,
    owner_dsn,
    pick,
    report,
    set_organization,
    superuser_dsn,
)

SCALE = float(os.environ.get("BENCH_SCALE", 1))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 300))
TICKETS = int(os.environ.get("BENCH_TICKETS", 1_000_000 * SCALE))
ORGS = int(os.environ.get("BENCH_ORGS", 100))
CUSTOMERS_PER_ORG = int(os.environ.get("BENCH_CUSTOMERS_PER_ORG", 500))
DUE = int(os.environ.get("BENCH_DUE", 1_000 * SCALE))
SAME_HOUR = int(os.environ.get("BENCH_SAME_HOUR", 100_000 * SCALE))
REALTIME_SECONDS = int(os.environ.get("BENCH_REALTIME_SECONDS", 60))
# The rate of the real-time run: deadlines an hour (the hundred thousand).
RATE_PER_HOUR = int(os.environ.get("BENCH_RATE_PER_HOUR", 100_000))
P95_TARGET_MS = 50
LOADERS = os.cpu_count() or 1
API = "/api/tickets"

SUBJECTS = [
    "الطلب ما وصل", "مشكلة في الدفع", "أبغى أرجع المنتج", "المنتج وصل مكسور",
    "تأخير في التوصيل", "استفسار عن الفاتورة", "الخدمة لا تعمل", "تغيير عنوان التوصيل",
    "شكوى على المندوب", "طلب استرداد المبلغ", "عطل في التطبيق", "سؤال عن الضمان",
    "Order not delivered", "Refund request", "Payment failed", "Wrong size received",
    "App keeps crashing", "Invoice question", "Change my address", "Broken on arrival",
]
COMMON_WORD = "الطلب"  # in one subject of twenty (and folded in any letter variant)

CUSTOMERS_SQL = """
INSERT INTO customers (organization_id, name, source)
SELECT %(org)s, CASE WHEN random() < 0.75 THEN {ar_name} ELSE {en_name} END, 'manual'
FROM generate_series(1, %(n)s) g
""".format(ar_name=pick("ar_first") + " || ' ' || " + pick("ar_last"),
           en_name=pick("en_first") + " || ' ' || " + pick("en_last"))

# Statuses: open 35%, pending 10%, on hold 5%, solved 15%, closed 35%. Ids and numbers ascend
# with time, one ticket every five minutes or so.
TICKETS_SQL = """
WITH agents AS (SELECT array_agg(id ORDER BY id) AS ids FROM users
                WHERE organization_id = %(org)s AND role = 'agent'),
     clients AS (SELECT array_agg(id ORDER BY id) AS ids FROM customers
                 WHERE organization_id = %(org)s),
     kind AS (SELECT id FROM ticket_types WHERE organization_id = %(org)s AND key = 'support'),
     s AS (SELECT g, random() AS r_status, random() AS r_assign, random() AS r_prio,
                  random() AS r_sla, random() AS r_customer, random() AS r_due,
                  now() - (%(n)s - g) * interval '5 minutes' AS opened
           FROM generate_series(1, %(n)s) g),
     t AS (SELECT s.*, CASE WHEN r_status < 0.35 THEN 'open' WHEN r_status < 0.45 THEN 'pending'
                            WHEN r_status < 0.50 THEN 'on_hold'
                            WHEN r_status < 0.65 THEN 'solved' ELSE 'closed' END AS status,
                  now() + interval '1 day' + r_due * interval '3 days' AS ahead
           FROM s)
INSERT INTO tickets (organization_id, number, subject, type_id, priority, status, customer_id,
                     assignee_id, tags, source, created_at, updated_at, first_responded_at,
                     solved_at, closed_at, first_response_due_at, resolution_due_at,
                     sla_paused_at, sla_status, sla_due_at, next_deadline_at)
SELECT %(org)s, g, {subject}, kind.id,
       CASE WHEN r_prio < 0.2 THEN 'low' WHEN r_prio < 0.8 THEN 'normal'
            WHEN r_prio < 0.95 THEN 'high' ELSE 'urgent' END,
       status,
       CASE WHEN r_customer < 0.6
            THEN clients.ids[1 + floor(r_customer / 0.6 * cardinality(clients.ids))::int] END,
       CASE WHEN r_assign >= 0.3
            THEN agents.ids[1 + floor((r_assign - 0.3) / 0.7 * cardinality(agents.ids))::int]
       END,
       CASE WHEN r_customer > 0.8 THEN ARRAY['vip'] ELSE '{{}}'::text[] END,
       CASE WHEN r_prio < 0.5 THEN 'whatsapp' ELSE 'manual' END,
       opened, opened,
       CASE WHEN status IN ('solved', 'closed') OR r_sla > 0.5 THEN opened + interval '1 hour'
       END,
       CASE WHEN status IN ('solved', 'closed') THEN opened + interval '1 day' END,
       CASE WHEN status = 'closed' THEN opened + interval '5 days' END,
       CASE WHEN status IN ('open', 'pending', 'on_hold') AND r_sla <= 0.5 THEN ahead END,
       CASE WHEN status IN ('open', 'pending', 'on_hold') THEN ahead + interval '1 day' END,
       CASE WHEN status IN ('pending', 'on_hold') THEN opened + interval '2 hours' END,
       CASE WHEN status NOT IN ('open', 'pending', 'on_hold') THEN NULL
            WHEN r_sla < 0.10 THEN 'breached'
            WHEN status <> 'open' THEN 'paused'
            WHEN r_sla < 0.15 THEN 'warning' ELSE 'ok' END,
       CASE WHEN status IN ('open', 'pending', 'on_hold') THEN ahead END,
       CASE WHEN status = 'open' THEN ahead - interval '12 hours'
            WHEN status = 'solved' THEN ahead END
FROM t, agents, clients, kind
ORDER BY g
""".format(subject=pick("subjects"))

COUNTER_SQL = "UPDATE ticket_settings SET last_number = %(n)s WHERE organization_id = %(org)s"

# Make `ids` come due at their `moments`: a first response that warned a minute before
# opening (low priority: the resolution clock's warning is 30 business hours away), so the
# timer breaches each once, at its moment.
COME_DUE_SQL = """
UPDATE tickets t SET status = 'open', sla_paused_at = NULL, first_responded_at = NULL,
       solved_at = NULL, closed_at = NULL, priority = 'low',
       created_at = d.moment - interval '1 minute',
       first_response_due_at = d.moment, first_response_warned_at = d.moment - interval '1 minute',
       first_response_breached_at = NULL, resolution_due_at = d.moment + interval '30 days',
       resolution_warned_at = NULL, resolution_breached_at = NULL,
       next_response_started_at = NULL, sla_status = 'warning', sla_due_at = d.moment,
       next_deadline_at = d.moment
FROM unnest(%(ids)s::bigint[], %(moments)s::timestamptz[]) AS d(id, moment)
WHERE t.organization_id = %(org)s AND t.id = d.id
"""


class Loader:
    """Bulk data as the schema owner, each organization in a transaction set to it."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.dsn = owner_dsn(app)
        self.org_ids: list[int] = []
        self.loaded = ""

    def create_organizations(self, count: int) -> None:
        from crm.tenancy import organization_context
        from crm.tickets import services
        from crm.transaction import commit

        with psycopg.connect(self.dsn) as conn:
            for org in create_organizations(conn, count):
                conn.execute(CUSTOMERS_SQL, {"org": org, "n": CUSTOMERS_PER_ORG,
                                             "ar_first": AR_FIRST, "ar_last": AR_LAST,
                                             "en_first": EN_FIRST, "en_last": EN_LAST})
                self.org_ids.append(org)
        with self.app.app_context():
            for org in self.org_ids:  # types, policies, hours, holidays: as the app makes them
                with organization_context(org):
                    services.ensure_defaults()
                    commit()

    def load_tickets(self, tickets: int) -> None:
        """Replace every ticket with `tickets` spread evenly over the organizations, then
        VACUUM ANALYZE (as autovacuum would)."""
        per_org = max(1, tickets // len(self.org_ids))
        start = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # The counters go too: their triggers see rows, not a TRUNCATE.
            conn.execute("TRUNCATE tickets, ticket_counts CASCADE")
        shares = [self.org_ids[n::LOADERS] for n in range(LOADERS)]
        with ThreadPoolExecutor(LOADERS) as pool:
            list(pool.map(lambda orgs: self._load(orgs, per_org), shares))
        loaded = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE tickets")
        self.loaded = f"{per_org * len(self.org_ids):,} tickets, {len(self.org_ids)} organizations"
        print(f"\ngenerated {self.loaded} in {loaded - start:.1f} s "
              f"(+ VACUUM ANALYZE {time.perf_counter() - loaded:.1f} s)")

    def _load(self, org_ids: list[int], per_org: int) -> None:
        with psycopg.connect(self.dsn) as conn:
            conn.execute("SET gin_pending_list_limit = '64MB'")
            conn.execute("SELECT setseed(0.13)")
            for org in org_ids:
                set_organization(conn, org)
                conn.execute(TICKETS_SQL, {"org": org, "n": per_org, "subjects": SUBJECTS})
                conn.execute(COUNTER_SQL, {"org": org, "n": per_org})
                conn.commit()

    def come_due(self, count: int, moments: Callable[[int], list]) -> int:
        """Make `count` open tickets, spread over the organizations, due at `moments(n)`."""
        per_org = max(1, count // len(self.org_ids))
        with psycopg.connect(self.dsn) as conn:
            for org in self.org_ids:
                set_organization(conn, org)
                ids = [row[0] for row in conn.execute(
                    "SELECT id FROM tickets WHERE organization_id = %s AND status = 'open' "
                    "AND sla_status = 'ok' ORDER BY random() LIMIT %s", (org, per_org))]
                conn.execute(COME_DUE_SQL, {"org": org, "ids": ids,
                                            "moments": moments(len(ids))})
                conn.commit()
        return per_org * len(self.org_ids)


# -- 2. the views -----------------------------------------------------------------------------

@dataclass
class Figures:
    result: Result
    plan_ms: float
    buffers: int


def run_views(app: Flask, baseline_client, loader: Loader, show_plans: bool
              ) -> dict[str, Figures]:
    """Each view through the API as a user of the organization in the middle, first page
    and half way down, in alternating rounds beside the baseline."""
    from crm.pagination import encode_cursor

    org = loader.org_ids[len(loader.org_ids) // 2]
    with app.app_context():
        headers, agent_id = _tenant(org)
    unsolved = "status IN ('open', 'pending', 'on_hold')"
    deep = {
        "all": _middle(loader, org, "true"),
        "mine": _middle(loader, org, f"assignee_id = {agent_id} AND {unsolved}"),
        "unassigned": _middle(loader, org, f"assignee_id IS NULL AND {unsolved}"),
        "breached": _middle(loader, org, "sla_status = 'breached'"),
    }
    due_key = _middle(loader, org, "sla_status = 'warning'", "sla_due_at, id", "sla_due_at, id")
    customer = _customer_name(loader, org)

    def cursor(view: str) -> str:
        return encode_cursor("id", (deep[view],))

    recent = ("ix_tickets_recent", "organization_id")
    scenarios = [
        Scenario("all (admin)", "admin", lambda: f"{API}", (recent,), "tickets"),
        Scenario("all, half way down", "admin", lambda: f"{API}?cursor={cursor('all')}",
                 (recent,), "tickets"),
        Scenario("mine (agent)", "agent", lambda: f"{API}?view=mine",
                 (("ix_tickets_assignee_unsolved", "assignee_id"),), "tickets"),
        Scenario("mine, half way down", "agent",
                 lambda: f"{API}?view=mine&cursor={cursor('mine')}",
                 (("ix_tickets_assignee_unsolved", "assignee_id"),), "tickets"),
        Scenario("unassigned (admin)", "admin", lambda: f"{API}?view=unassigned",
                 (("ix_tickets_assignee_unsolved", "assignee_id"),), "tickets"),
        Scenario("unassigned, half way down", "admin",
                 lambda: f"{API}?view=unassigned&cursor={cursor('unassigned')}",
                 (("ix_tickets_assignee_unsolved", "assignee_id"),), "tickets"),
        Scenario("breaching (admin)", "admin", lambda: f"{API}?view=breaching",
                 (("ix_tickets_breaching", "organization_id"),), "tickets"),
        Scenario("breaching, half way down", "admin",
                 lambda: f"{API}?view=breaching&cursor={encode_cursor('due', due_key)}",
                 (("ix_tickets_breaching", "organization_id"),), "tickets"),
        Scenario("breached (admin)", "admin", lambda: f"{API}?view=breached",
                 (("ix_tickets_breached", "organization_id"),), "tickets"),
        Scenario("breached, half way down", "admin",
                 lambda: f"{API}?view=breached&cursor={cursor('breached')}",
                 (("ix_tickets_breached", "organization_id"),), "tickets"),
        Scenario(f"search a common word «{COMMON_WORD}»", "admin",
                 lambda: f"{API}?search={COMMON_WORD}",
                 (("ix_tickets_search_subject", "~~"),), "tickets"),
        Scenario("search a word, half way down", "admin",
                 lambda: f"{API}?search={COMMON_WORD}&cursor={cursor('all')}",
                 (("ix_tickets_search_subject", "~~"),), "tickets"),
        Scenario("search a customer's name", "admin", lambda: f"{API}?search={customer}",
                 (("ix_customers_search_name", "~~"),), "tickets"),
        Scenario("search a number «#1234»", "admin", lambda: f"{API}?search=%231234",
                 (("uq_tickets_organization_id_number", "number"),), "tickets"),
    ]
    client = app.test_client()

    def get(scenario: Scenario) -> Callable[[], dict]:
        return lambda: check(client.get(scenario.url(), headers=headers[scenario.role])).json

    results = measure_alternating({
        "bare Flask + 1 indexed SELECT": lambda: check(baseline_client.get("/baseline/1259")),
        **{scenario.name: get(scenario) for scenario in scenarios}}, REQUESTS)
    report(f"ticket views — {loader.loaded}; {REQUESTS} sequential API requests each (bearer, "
           "in-process WSGI, 50 a page) as one organization's users, alternating rounds",
           results[1:], results[0], tail=95)
    slow = [r.name for r in results[1:] if r.pct(95) >= P95_TARGET_MS]
    print(f"p95 under {P95_TARGET_MS} ms: {'every view' if not slow else 'NOT ' + ', '.join(slow)}")
    return {scenario.name: Figures(result, *check_plan(app, org, get(scenario), scenario,
                                                       show_plans))
            for scenario, result in zip(scenarios, results[1:], strict=True)}


def _tenant(org: int) -> tuple[dict[str, dict], int]:
    """Bearer headers of the organization's admin and of an agent; the agent's id."""
    from sqlalchemy import select

    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context

    headers, agent_id = {}, 0
    for role in ("admin", "agent"):
        with organization_context(org):  # a commit ends each credential's transaction
            user = db.session.scalar(select(User).where(User.role == role).order_by(User.id)
                                     .limit(1))
            agent_id = user.id if role == "agent" else agent_id
            headers[role] = credentials(user)[0]
    return headers, agent_id


def _middle(loader: Loader, org: int, where: str, key: str = "id",
            order: str = "id DESC"):
    """The sort key of the row half way down a list (of its only row; a tiny run may have
    none: then the first row of the organization)."""
    with psycopg.connect(loader.dsn) as conn:
        set_organization(conn, org)
        count = conn.execute(f"SELECT count(*) FROM tickets WHERE organization_id = %s "
                             f"AND {where}", (org,)).fetchone()[0]
        row = conn.execute(f"SELECT {key} FROM tickets WHERE organization_id = %s AND {where} "
                           f"ORDER BY {order} OFFSET %s LIMIT 1", (org, count // 2)).fetchone()
        row = row or conn.execute(f"SELECT {key} FROM tickets WHERE organization_id = %s "
                                  "AND sla_due_at IS NOT NULL LIMIT 1", (org,)).fetchone()
    return row[0] if len(row) == 1 else tuple(row)


def _customer_name(loader: Loader, org: int) -> str:
    """The first name and part of the family name of a customer with tickets."""
    with psycopg.connect(loader.dsn) as conn:
        set_organization(conn, org)
        name = conn.execute("SELECT c.name FROM customers c JOIN tickets t ON t.customer_id = "
                            "c.id WHERE c.organization_id = %s LIMIT 1", (org,)).fetchone()[0]
    first, last = name.split(" ", 1)
    return f"{first} {last[:3]}"


# -- 3. the sweep -----------------------------------------------------------------------------

@dataclass
class Sweep:
    open_tickets: int
    due: int
    done: int
    seconds: float
    lookup_ms: float
    lookup_pages: int


def run_sweep(app: Flask, loader: Loader) -> Sweep:
    """DUE tickets come due now; the timer breaches them. Its time, and what its lookup of
    what is due costs (EXPLAIN ANALYZE of the query inside wasl_tickets_due)."""
    from datetime import UTC, datetime

    from crm.tickets import jobs

    now = datetime.now(UTC)
    due = loader.come_due(DUE, lambda n: [now - timedelta(seconds=random.uniform(1, 60))
                                          for _ in range(n)])
    with psycopg.connect(loader.dsn, autocommit=True) as conn:
        conn.execute("ANALYZE tickets")
    lookup_ms, pages = _lookup_plan()
    with psycopg.connect(superuser_dsn(BENCH_DATABASE)) as conn:
        open_tickets = conn.execute("SELECT count(*) FROM tickets WHERE status = 'open'"
                                    ).fetchone()[0]
    with app.app_context():
        start = time.perf_counter()
        done = jobs.process_due()
        seconds = time.perf_counter() - start
    print(f"\nsweep with {open_tickets:,} open tickets: {done} of {due} due done in "
          f"{seconds:.2f} s ({seconds / max(done, 1) * 1000:.1f} ms a ticket); the lookup of "
          f"what is due: {lookup_ms:.2f} ms, {pages} pages")
    return Sweep(open_tickets, due, done, seconds, lookup_ms, pages)


def _lookup_plan() -> tuple[float, int]:
    """EXPLAIN (ANALYZE, BUFFERS) of the timer's lookup of what is due, one batch of it."""
    import re

    from crm.tickets.jobs import BATCH

    with psycopg.connect(superuser_dsn(BENCH_DATABASE)) as conn:
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT organization_id, id FROM tickets "
            "WHERE next_deadline_at IS NOT NULL AND next_deadline_at <= now() "
            "ORDER BY next_deadline_at LIMIT %s", (BATCH,)))
    if "ix_tickets_due" not in plan:
        print("NOT using ix_tickets_due:\n" + plan)
    buffers = re.search(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?", plan)
    pages = sum(int(n or 0) for n in buffers.groups()) if buffers else 0
    return float(re.search(r"Execution Time: ([\d.]+)", plan).group(1)), pages


# -- 4. the same hour -------------------------------------------------------------------------

def run_same_hour(app: Flask, loader: Loader) -> None:
    """SAME_HOUR deadlines all due at once: the throughput. Then deadlines arriving at the
    rate of SAME_HOUR an hour for REALTIME_SECONDS, a timer waking at each earliest deadline:
    how late each breach was."""
    from datetime import UTC, datetime

    from crm.tickets import jobs

    now = datetime.now(UTC)
    due = loader.come_due(SAME_HOUR, lambda n: [now - timedelta(seconds=random.uniform(1, 3600))
                                                for _ in range(n)])
    with app.app_context():
        start, done = time.perf_counter(), 0
        while (batch := jobs.process_due()) > 0:
            done += batch
        seconds = time.perf_counter() - start
    rate = done / seconds
    print(f"\n{done:,} of {due:,} deadlines due at once handled in {seconds:.1f} s: "
          f"{rate:.0f} a second; {SAME_HOUR:,} spread over an hour arrive at "
          f"{SAME_HOUR / 3600:.1f} a second ({rate / (SAME_HOUR / 3600):.1f}x headroom); all at "
          f"the same instant, the last would be {seconds:.0f} s late")
    _realtime(app, loader)


def _realtime(app: Flask, loader: Loader) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from crm.extensions import db
    from crm.tickets import jobs

    count = max(1, int(RATE_PER_HOUR / 3600 * REALTIME_SECONDS))
    start = datetime.now(UTC) + timedelta(seconds=5)
    moments = [start + timedelta(seconds=REALTIME_SECONDS * n / count) for n in range(count)]
    made = loader.come_due(count, lambda n: random.sample(moments, n))
    end = start + timedelta(seconds=REALTIME_SECONDS + 10)
    with app.app_context():
        while (now := datetime.now(UTC)) < end:
            deadline = db.session.scalar(text("SELECT wasl_tickets_next_deadline()"))
            db.session.rollback()
            if deadline is None or deadline > end:
                break
            time.sleep(max(0.0, (deadline - now).total_seconds()))  # RQ's enqueue_at
            jobs.process_due()
    with psycopg.connect(superuser_dsn(BENCH_DATABASE)) as conn:
        late = sorted(row[0] for row in conn.execute(
            "SELECT extract(epoch FROM e.created_at - t.first_response_due_at) FROM "
            "ticket_events e JOIN tickets t ON t.id = e.ticket_id WHERE e.kind = "
            "'sla_breached' AND t.first_response_due_at >= %s", (start,)))
    if not late:
        print("real time: no breach recorded")
        return
    print(f"real time: {len(late)} of {made} deadlines over {REALTIME_SECONDS} s "
          f"({made / REALTIME_SECONDS:.1f} a second), breach after its due moment: p50 "
          f"{late[len(late) // 2]:.2f} s, p99 {late[int(len(late) * 0.99)]:.2f} s, max "
          f"{late[-1]:.2f} s (target: within 60 s)")


# -- the run ----------------------------------------------------------------------------------

def run() -> None:
    app = bench_app()
    baseline_client = baseline_app(app.config["DATABASE_URL"]).test_client()
    loader = Loader(app)
    loader.create_organizations(ORGS)
    figures, sweeps = {}, {}
    for divisor in (10, 1):
        loader.load_tickets(TICKETS // divisor)
        figures[divisor] = run_views(app, baseline_client, loader, show_plans=divisor == 1)
        sweeps[divisor] = run_sweep(app, loader)
    print_growth(figures[10], figures[1], sweeps[10], sweeps[1])
    run_same_hour(app, loader)


def print_growth(small: dict[str, Figures], big: dict[str, Figures], before: Sweep,
                 after: Sweep) -> None:
    print("\ndoes the time grow with the data? (a tenth of the tickets, then all)")
    print(f"{'scenario':38} {'p50 ms':>13} {'p95 ms':>13} {'SQL ms':>13} {'pages':>13}")
    for name, grown in big.items():
        was = small[name]
        cells = [(was.result.pct(50), grown.result.pct(50)),
                 (was.result.pct(95), grown.result.pct(95)), (was.plan_ms, grown.plan_ms)]
        print(f"{name:38} " + " ".join(f"{a:6.2f}→{b:6.2f}" for a, b in cells)
              + f" {was.buffers:6d}→{grown.buffers:<6d}")
    print(f"{'sweep (ms a due ticket)':38} open {before.open_tickets:,}→{after.open_tickets:,}: "
          f"{before.seconds / max(before.done, 1) * 1000:.1f}→"
          f"{after.seconds / max(after.done, 1) * 1000:.1f} ms; lookup "
          f"{before.lookup_ms:.2f}→{after.lookup_ms:.2f} ms, "
          f"{before.lookup_pages}→{after.lookup_pages} pages")
