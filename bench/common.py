"""What every benchmark shares: its own database, the baseline, timing and reporting."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
from flask import Flask, request
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

BENCH_DATABASE = "wasl_bench"
BENCH_REDIS_DB = 9  # a Redis database of the benchmarks' own: their workers run only their jobs


def bench_app() -> Flask:
    """An app on a fresh, migrated `wasl_bench` database (the embedded server's superuser
    creates it), so benchmarks never touch the data of `crm up`."""
    from flask_migrate import upgrade

    from crm import create_app

    app_url = make_url(os.environ["DATABASE_URL"]).set(database=BENCH_DATABASE)
    owner_url = make_url(os.environ["MIGRATION_DATABASE_URL"]).set(database=BENCH_DATABASE)
    with psycopg.connect(superuser_dsn("postgres"), autocommit=True) as conn:
        # Never WITH (FORCE): that would cut off another benchmark running on the same server.
        busy = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                            (BENCH_DATABASE,)).fetchone()[0]
        if busy:
            raise SystemExit(f"another benchmark is using {BENCH_DATABASE} ({busy} "
                             "connections): run this one when it has finished")
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        conn.execute(f"CREATE DATABASE {BENCH_DATABASE} OWNER {owner_url.username}")
    redis_url = urlsplit(os.environ["REDIS_URL"])._replace(path=f"/{BENCH_REDIS_DB}").geturl()
    app = create_app({
        "DATABASE_URL": app_url.render_as_string(hide_password=False),
        "MIGRATION_DATABASE_URL": owner_url.render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
        "RATELIMIT_ENABLED": False,
    })
    app.extensions["crm.redis"].flushdb()
    with app.app_context():
        upgrade()
    return app


def superuser_dsn(database: str) -> str:
    """The embedded server's superuser on `database`."""
    server = make_url(os.environ["MIGRATION_DATABASE_URL"])
    return f"postgresql://postgres@{server.host}:{server.port}/{database}"


def worker_environment(app: Flask) -> dict[str, str]:
    """What a `crm` process (a worker) needs to work on the benchmark's database and Redis."""
    config = app.config
    return {**os.environ, "DATABASE_URL": config["DATABASE_URL"],
            "MIGRATION_DATABASE_URL": config["MIGRATION_DATABASE_URL"],
            "REDIS_URL": config["REDIS_URL"], "SECRET_KEY": config["SECRET_KEY"],
            "CRM_INSTANCE_PATH": str(config["INSTANCE_PATH"]), "SMTP_HOST": ""}


def baseline_app(database_url: str, owner_url: str | None = None) -> Flask:
    """The ceiling of this stack: bare Flask answering one indexed SELECT per request, and, given
    the schema owner's URL, one committed INSERT of the request body per POST /baseline."""
    engine = create_engine(database_url, pool_size=5)
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS _warm (id int)"))
    app = Flask("baseline")

    @app.get("/baseline/<int:row_id>")
    def one_select(row_id: int):
        with engine.connect() as conn:
            row = conn.execute(text("SELECT oid, relname FROM pg_class WHERE oid = :id"),
                               {"id": row_id}).first()
        return {"id": row_id, "name": row[1] if row else None}

    if owner_url:
        _create_baseline_table(owner_url)

        @app.post("/baseline")
        def one_insert():
            with engine.begin() as conn:
                row_id = conn.execute(text("INSERT INTO bench_baseline (body) VALUES (:body) "
                                           "RETURNING id"),
                                      {"body": request.get_data(as_text=True)}).scalar_one()
            return {"id": row_id}

    return app


def _create_baseline_table(owner_url: str) -> None:
    """A plain logged table with a primary key, created by the owner as a migration would (the
    schema's default privileges let the app role write it)."""
    engine = create_engine(owner_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_baseline (id bigint GENERATED ALWAYS "
                          "AS IDENTITY PRIMARY KEY, body text NOT NULL, "
                          "created_at timestamptz NOT NULL DEFAULT now())"))
    engine.dispose()


@dataclass
class Result:
    name: str
    latencies: list[float]

    @property
    def rps(self) -> float:
        return len(self.latencies) / sum(self.latencies)

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def measure(name: str, call: Callable[[], object], requests: int, warmup: int = 50) -> Result:
    for _ in range(warmup):
        call()
    latencies = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return Result(name, latencies)


def measure_alternating(calls: dict[str, Callable[[], object]], requests: int, rounds: int = 5,
                        warmup: int = 50) -> list[Result]:
    """Measure several calls in alternating rounds, so a load that comes and goes on a shared
    machine weighs on each of them alike (their ratios are what the figures are for)."""
    results = {name: Result(name, []) for name in calls}
    for name, call in calls.items():
        measure(name, call, 0, warmup)
    for _ in range(rounds):
        for name, call in calls.items():
            results[name].latencies += measure(name, call, requests // rounds, 0).latencies
    return list(results.values())


def report(title: str, results: list[Result], baseline: Result, tail: int = 99,
           floor: Result | None = None) -> None:
    """Print the figures beside the baseline; `tail` picks the high percentile shown. `floor`,
    one of `results`, adds a column of ratios to it: the app's own cheapest request of the
    same kind, which tells what a scenario adds to what every request of the app costs."""
    print(f"\n{title}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}, load average "
          f"{os.getloadavg()[0]:.1f} (other processes share the cores)")
    print(f"{'scenario':38} {'req/s':>9} {'p50 ms':>8} {f'p{tail} ms':>8} {'vs baseline':>12}"
          + (f" {'vs floor':>9}" if floor else ""))
    for result in [baseline, *results]:
        ratio = result.rps / baseline.rps
        print(f"{result.name:38} {result.rps:9.0f} {result.pct(50):8.2f} "
              f"{result.pct(tail):8.2f} {ratio:11.2f}x"
              + (f" {result.rps / floor.rps:8.2f}x" if floor else ""))
    if floor:
        print(f"(vs floor: against «{floor.name}»)")
    print(f"(median of the baseline: {statistics.median(baseline.latencies) * 1000:.2f} ms)")


def credentials(user) -> tuple[dict[str, str], str]:
    """A bearer header and a login session's credential for `user`, each a session of its
    own, committed so that the measured requests find them."""
    from crm.foundation.services import open_session
    from crm.security import issue_token
    from crm.tenancy import organization_context
    from crm.transaction import commit

    with organization_context(user.organization_id):
        header = {"Authorization": f"Bearer {issue_token(user)}"}
        credential = open_session(user, "browser").credential
        commit()
    return header, credential


def sign_in(client, credential: str) -> None:
    """Give the test client the login session `credential` names, as the login page would."""
    with client.session_transaction() as session:
        session["_user_id"] = credential
        session["_fresh"] = True


def check(response):
    """The response, when it is a 200 (else fail showing what came back)."""
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True))
    return response


# -- data made with set-based SQL as the schema owner ------------------------------------------

AR_FIRST = ["محمد", "أحمد", "عبدالله", "عبدالرحمن", "خالد", "فهد", "سعود", "عمر", "علي", "يوسف",
            "إبراهيم", "ناصر", "سلطان", "تركي", "فيصل", "فاطمة", "عائشة", "نورة", "سارة", "مريم",
            "ريم", "هيا", "لطيفة", "منى", "هند", "جواهر", "أمل", "دانة", "لمى", "رهف"]
AR_LAST = ["العتيبي", "القحطاني", "الشمري", "الدوسري", "الحربي", "المطيري", "الغامدي",
           "الزهراني", "السبيعي", "العنزي", "الشهري", "البلوي", "المالكي", "السلمي", "الرشيدي",
           "عبدالعزيز", "حسن", "إسماعيل", "منصور", "الخطيب"]
EN_FIRST = ["James", "Sarah", "Omar", "Layla", "John", "Emily", "Ahmed", "Priya", "David",
            "Maria", "Daniel", "Aisha", "Michael", "Fatima", "Ravi", "Sophie"]
EN_LAST = ["Smith", "Khan", "Johnson", "Patel", "Brown", "Haddad", "Nasser", "Williams",
           "Taylor", "Hussain", "Kumar", "Martin"]


def pick(array: str, rand: str = "random()") -> str:
    """SQL for one element of the text[] parameter `array`, chosen by `rand` in [0, 1)."""
    return (f"(%({array})s::text[])[1 + floor({rand} * "
            f"cardinality(%({array})s::text[]))::int]")


# An organization with an admin, a manager and eight agents.
ORGANIZATION_SQL = [
    "INSERT INTO organizations (id, name, slug) VALUES (%(org)s, %(name)s, %(slug)s)",
    """INSERT INTO users (organization_id, email, full_name, password_hash, role)
    SELECT %(org)s, 'user' || g || '@org' || %(org)s || '.example', {name}, %(hash)s,
           CASE g WHEN 1 THEN 'admin' WHEN 2 THEN 'manager' ELSE 'agent' END
    FROM generate_series(1, 10) g""".format(name=pick("ar_first") + " || ' ' || "
                                            + pick("ar_last")),
]


def owner_dsn(app: Flask) -> str:
    """A psycopg DSN of the schema owner on the benchmark's database."""
    url = make_url(app.config["MIGRATION_DATABASE_URL"]).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def set_organization(conn: psycopg.Connection, org: int) -> None:
    """RLS is FORCEd even for the owner: rows are written in a transaction set to their
    organization, as production imports are."""
    conn.execute("SELECT set_config('app.current_organization_id', %s, true)", (str(org),))


def create_organizations(conn: psycopg.Connection, count: int) -> Iterator[int]:
    """Make `count` organizations with their team; yield each id while the transaction is set
    to it, so the caller can add that organization's rows."""
    from crm.foundation.services import hash_password

    password_hash = hash_password("bench-password")
    for n in range(count):
        org = conn.execute("SELECT nextval(pg_get_serial_sequence('organizations', "
                           "'id'))").fetchone()[0]
        set_organization(conn, org)
        params = {"org": org, "name": f"متجر {n + 1}", "slug": f"bench-store-{org}",
                  "hash": password_hash, "ar_first": AR_FIRST, "ar_last": AR_LAST}
        for statement in ORGANIZATION_SQL:
            conn.execute(statement, params)
        yield org


# -- query plans --------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    role: str  # whose credentials: "admin" or "agent"
    url: Callable[[], str]  # the request, as that user
    # (index, what its Index Cond must test): an index used only for organization_id does
    # not make a search fast.
    expected: tuple[tuple[str, str], ...]
    table: str  # the plan checked is of the statement that pages through this table


@contextmanager
def statements_recorded(app: Flask) -> Iterator[list[tuple[str, object]]]:
    """The SQL statements (and parameters) the app sends while the block runs."""
    from crm.extensions import db

    with app.app_context():
        engine = db.engine
    statements: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def check_plan(app: Flask, org: int, call: Callable[[], object], scenario: Scenario,
               show: bool) -> tuple[float, int]:
    """EXPLAIN (ANALYZE, BUFFERS) the statement the request pages with, as the app role in the
    organization; say whether it uses the indexes it should. Returns (ms, pages touched)."""
    from crm.extensions import db
    from crm.tenancy import organization_context

    with statements_recorded(app) as statements:
        answer = call()
    statement, params = next(
        (s, p) for s, p in statements
        if f"FROM {scenario.table}" in s and "ORDER BY" in s and "LIMIT" in s)
    with app.app_context(), organization_context(org):
        plan = [row[0] for row in db.session.connection().exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params)]
    inner = function_plans(app, org, statement, params)
    text = "\n".join(plan)
    conditions = index_conditions(plan + [line for lines in inner for line in lines])
    verdicts = [f"{index} {'ok' if any(test in c for c in conditions.get(index, ())) else 'NOT'}"
                f" used for {test}" for index, test in scenario.expected]
    items = f" ({len(answer['items'])} items)" if isinstance(answer, dict) else ""
    print(f"\nplan of «{scenario.name}»{items}: {'; '.join(verdicts)}")
    if show:
        for line in trimmed(plan):
            print(f"  {line}")
        for number, lines in enumerate(inner, start=1):
            print(f"  inside the search function, as its owner (query {number} it ran):")
            for line in trimmed(lines):
                print(f"  {line}")
    buffers = re.search(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?", text)
    pages = sum(int(n or 0) for n in buffers.groups()) if buffers else 0
    return float(re.search(r"Execution Time: ([\d.]+)", text).group(1)), pages


AUTO_EXPLAIN = ["LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                "SET auto_explain.log_analyze = on", "SET auto_explain.log_buffers = on",
                "SET auto_explain.log_nested_statements = on",
                "SET auto_explain.log_level = notice"]


def function_plans(app: Flask, org: int, statement: str, params: dict) -> list[list[str]]:
    """The plans of the statements that the SECURITY DEFINER search functions of crm/search.py
    ran for `statement`, if it calls one ([] otherwise): the plan of the statement itself only
    shows a Function Scan. auto_explain logs each as it runs (a PL/pgSQL function runs only
    some of its statements), run here as the app role, in the organization, by a superuser
    session (only a superuser may load auto_explain)."""
    if not re.search(r"\bwasl_(matching_\w+|customer_page)\(", statement):
        return []
    notices: list[str] = []
    with psycopg.connect(superuser_dsn(BENCH_DATABASE)) as conn:
        for setting in AUTO_EXPLAIN:
            conn.execute(setting)
        conn.execute(f'SET ROLE "{make_url(app.config["DATABASE_URL"]).username}"')
        set_organization(conn, org)
        conn.add_notice_handler(lambda notice: notices.append(notice.message_primary or ""))
        conn.execute(statement, params)
    plans = []
    for notice in notices[:-1]:  # the last is the statement itself
        lines = notice.splitlines()
        start = next((n for n, line in enumerate(lines) if "(cost=" in line), len(lines))
        if any(" Scan " in line for line in lines[start:]):  # not a PL/pgSQL IF or RETURN
            plans.append(lines[start:])
    return plans


def index_conditions(plan: list[str]) -> dict[str, list[str]]:
    """The Index Cond of each index the plan scans."""
    conditions: dict[str, list[str]] = {}
    index = None
    for line in plan:
        if node := re.search(r"Scan(?: Backward)? (?:using|on) (\w+)", line):
            index = node.group(1)
        elif "->" in line:
            index = None
        elif (condition := re.search(r"Index Cond: (.*)", line)) and index:
            conditions.setdefault(index, []).append(condition.group(1))
    return conditions


def trimmed(plan: list[str], lines: int = 40, width: int = 118) -> list[str]:
    """The plan's nodes, index conditions, total buffers and time; the rest is noise here."""
    keep = plan[:2] + [line for line in plan[2:] if re.search(
        r"->|Index Cond|Recheck Cond|Rows Removed by|Execution Time", line)]
    cut = [line if len(line) <= width else line[:width - 1] + "…" for line in keep]
    return cut[:lines] + (["…"] if len(cut) > lines else [])


def one_line(statement: str) -> str:
    return " ".join(statement.split())
