"""What every benchmark shares: its own database, the baseline, timing and reporting."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BENCH_DATABASE = "wasl_bench"


def bench_app() -> Flask:
    """An app on a fresh, migrated `wasl_bench` database (the embedded server's superuser
    creates it), so benchmarks never touch the data of `crm up`."""
    from flask_migrate import upgrade

    from crm import create_app

    app_url = make_url(os.environ["DATABASE_URL"]).set(database=BENCH_DATABASE)
    owner_url = make_url(os.environ["MIGRATION_DATABASE_URL"]).set(database=BENCH_DATABASE)
    admin = make_url(os.environ["MIGRATION_DATABASE_URL"])
    dsn = f"postgresql://postgres@{admin.host}:{admin.port}/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DATABASE} OWNER {owner_url.username}")
    app = create_app({
        "DATABASE_URL": app_url.render_as_string(hide_password=False),
        "MIGRATION_DATABASE_URL": owner_url.render_as_string(hide_password=False),
        "RATELIMIT_ENABLED": False,
    })
    with app.app_context():
        upgrade()
    return app


def baseline_app(database_url: str) -> Flask:
    """The ceiling of this stack: bare Flask answering one indexed SELECT per request."""
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

    return app


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


def report(title: str, results: list[Result], baseline: Result) -> None:
    print(f"\n{title}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}")
    print(f"{'scenario':38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs baseline':>12}")
    for result in [baseline, *results]:
        ratio = result.rps / baseline.rps
        print(f"{result.name:38} {result.rps:9.0f} {result.pct(50):8.2f} {result.pct(99):8.2f} "
              f"{ratio:11.2f}x")
    print(f"(median of the baseline: {statistics.median(baseline.latencies) * 1000:.2f} ms)")
