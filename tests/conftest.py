"""Test harness: one embedded PostgreSQL and Redis per run, a database per xdist worker, and
every test inside a transaction that is rolled back.

The app connects as the unprivileged `wasl_app` role, exactly as in production, so Row Level
Security is what the tests see. Jobs go to real Redis; `run_jobs()` drains them in-process.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import socket
import tempfile
from pathlib import Path

import psycopg
import pytest
from flask.testing import FlaskClient
from flask_sqlalchemy.session import Session as FlaskSQLAlchemySession
from itsdangerous import URLSafeTimedSerializer

from crm import embedded

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "http://127.0.0.1:9"  # loopback's discard port: nothing listens
_SERVERS_ENV = ("WASL_TEST_PG_PORT", "WASL_TEST_REDIS_PORT", "WASL_TEST_BASE")


# -- servers: started once by the controlling process --------------------------------------

def pytest_configure(config):
    if hasattr(config, "workerinput") or os.environ.get("WASL_TEST_PG_PORT"):
        return
    base = Path(tempfile.mkdtemp(prefix="wasl-test-"))
    pg = embedded.start_postgres(base, fsync=False)
    rd = embedded.start_redis(base, persist=False)
    config._wasl_servers = (pg, rd, base)
    os.environ.update(WASL_TEST_PG_PORT=str(pg.port), WASL_TEST_REDIS_PORT=str(rd.port),
                      WASL_TEST_BASE=str(base))
    _build_template_database(pg)


def pytest_unconfigure(config):
    servers = getattr(config, "_wasl_servers", None)
    if servers:
        pg, rd, base = servers
        embedded.stop_redis(rd)
        embedded.stop_postgres(pg)
        shutil.rmtree(base, ignore_errors=True)
        for key in _SERVERS_ENV:
            os.environ.pop(key, None)


def _server() -> embedded.EmbeddedPostgres:
    base = Path(os.environ["WASL_TEST_BASE"])
    return embedded.EmbeddedPostgres(base / "postgres", int(os.environ["WASL_TEST_PG_PORT"]))


def _settings(database: str, redis_db: int) -> dict:
    pg = _server()
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-" + "0123456789abcdef" * 3,
        "DATABASE_URL": pg.url(embedded.APP_ROLE, database),
        "MIGRATION_DATABASE_URL": pg.url(embedded.OWNER_ROLE, database),
        "REDIS_URL": f"redis://127.0.0.1:{os.environ['WASL_TEST_REDIS_PORT']}/{redis_db}",
        "RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:{os.environ['WASL_TEST_REDIS_PORT']}/{redis_db}",
        "INSTANCE_PATH": Path(os.environ["WASL_TEST_BASE"]) / f"instance-{database}",
        "PUBLIC_URL": "http://localhost",
        "WHATSAPP_MEDIA_HOSTS": "http://127.0.0.1",  # the fake Graph API's media downloads
        # Never Meta: nothing listens here, so a test that forgot the fake
        # (tests/whatsapp/fake_graph.py) fails with "could not be reached".
        "WHATSAPP_GRAPH_URL": NOWHERE,
        # Self-hosted (everything unlocked) unless a test sets a key (the `stripe_api`
        # fixture); and then only ever the run's local fake, never Stripe itself.
        "STRIPE_SECRET_KEY": "",
        "STRIPE_WEBHOOK_SECRET": "",
        "STRIPE_API_BASE": fake_stripe().url,
    }


@functools.cache
def fake_stripe():
    """The local fake of Stripe's API (tests/billing/fake_stripe.py) that every app of this
    process talks to, started once."""
    from tests.billing.fake_stripe import FakeStripe

    return FakeStripe()


def _build_template_database(pg: embedded.EmbeddedPostgres) -> None:
    """Migrate a template database once; each worker copies it (fast, no re-migration)."""
    from flask_migrate import upgrade

    from crm import create_app

    with psycopg.connect(pg.superuser_dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS wasl_template")
        conn.execute(f"CREATE DATABASE wasl_template OWNER {embedded.OWNER_ROLE}")
    app = create_app(_settings("wasl_template", 0))
    with app.app_context():
        upgrade()
        from crm.extensions import db

        db.engine.dispose()


def create_database(name: str) -> None:
    with psycopg.connect(_server().superuser_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE wasl_template OWNER {embedded.OWNER_ROLE}")


def worker_number(request) -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw"))


# -- no internet: every server a test talks to runs on this machine -------------------------

class InternetBlockedError(RuntimeError):
    """A test tried to reach past this machine (not an OSError, which code would take for a
    network failure and handle)."""


LOOPBACK_HOSTS = ("localhost", "")


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host in LOOPBACK_HOSTS or host.endswith(".localhost")
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _is_name(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return True
    return False


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Refuse every connection and name lookup that would leave this machine: the servers of
    the tests (PostgreSQL, Redis, the fake Graph API, SMTP) listen on loopback or a unix socket.

    The test fails even when the code swallowed the refusal, so a forgotten fake is never
    taken for a provider that happened to be down. Yields the refusals (a test of the guard
    itself empties it).
    """
    refused: list[str] = []
    connect, connect_ex, getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                        socket.getaddrinfo)

    def refuse(what: str):
        refused.append(what)
        raise InternetBlockedError(f"a test may not reach {what}: use a local fake")

    def check(sock: socket.socket, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            refuse(f"{address[0]}:{address[1]}")

    def guarded_connect(sock, address):
        check(sock, address)
        return connect(sock, address)

    def guarded_connect_ex(sock, address):
        check(sock, address)
        return connect_ex(sock, address)

    def guarded_getaddrinfo(host, port, *args, **kwargs):
        if host is not None and _is_name(host) and not _is_loopback(host):
            refuse(f"{host} (a name lookup)")
        return getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield refused
    if refused:
        pytest.fail(f"the test tried to reach the internet: {', '.join(refused)}")


# -- the app and the per-test transaction ---------------------------------------------------

@pytest.fixture(scope="session")
def app(request):
    from crm import create_app

    number = worker_number(request)
    name = f"wasl_test_{number}"
    create_database(name)
    app = create_app(_settings(name, 1 + 2 * number))
    app.test_client_class = CsrfClient
    app.wsgi_app = _as_in_production(app.wsgi_app)
    with app.app_context():
        yield app


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing():
    """Hash passwords with argon2's cheapest settings: at production cost a hash or a check
    takes ~0.2 s, and nearly every test makes an account or logs in, so the suite would spend
    a third of its time hashing. What is tested is that passwords are checked, not how slowly.
    (The processes tests start, `crm up` and workers, hash as in production.)"""
    from argon2 import PasswordHasher

    from crm.foundation import services

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "_hasher", cheap)
        patch.setattr(services, "_DUMMY_HASH", cheap.hash("not a password"))
        yield


@pytest.fixture(autouse=True)
def _isolated(request, app):
    """Run each test in a transaction that is rolled back; clear Redis; no organization set;
    a fresh `g` (the session-wide app context's: a request context of the last test would
    otherwise leave its locale cached there, and this test's messages in its language)."""
    if request.node.get_closest_marker("live"):
        yield
        return
    from flask import g

    from crm.extensions import db
    from crm.tenancy import set_current_organization

    app.extensions["crm.redis"].flushdb()
    connection = db.engine.connect()
    outer = connection.begin()
    original = db.session
    db.session = db._make_scoped_session(
        {"bind": connection, "join_transaction_mode": "create_savepoint",
         "class_": _ConnectionBoundSession})
    set_current_organization(None)
    vars(g._get_current_object()).clear()
    try:
        yield
    finally:
        db.session.remove()
        db.session = original
        set_current_organization(None)
        outer.rollback()
        connection.close()


class _ConnectionBoundSession(FlaskSQLAlchemySession):
    """A session that always uses the test's connection.

    Flask-SQLAlchemy's get_bind() returns the engine and ignores `bind`, so without this a
    commit (every successful request) would commit for real and leak into later tests.
    """

    def get_bind(self, *args, **kwargs):
        return self.bind


class CsrfClient(FlaskClient):
    """A test client that sends the CSRF token on every unsafe request, as the page would."""

    def open(self, *args, **kwargs):
        method = kwargs.get("method", "GET").upper()
        if method not in ("GET", "HEAD", "OPTIONS") and kwargs.pop("csrf", True):
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("X-CSRFToken", self.csrf_token())
            kwargs["headers"] = headers
        return super().open(*args, **kwargs)

    def csrf_token(self) -> str:
        import secrets

        with self.session_transaction() as session:
            raw = session.setdefault("csrf_token", secrets.token_hex(20))
        app = self.application
        return URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").dumps(raw)


def _as_in_production(wsgi_app):
    """Start every request, whichever client sends it (test client, schemathesis), as in production.

    Requests reuse the session-wide app context, so without this `g` (the logged-in user, the
    locale, the enabled modules) would leak from one request into the next; and what the test
    wrote before the request is committed first, as production data would be, or a request
    that fails (and so rolls back) would take the test's setup with it. The commit only
    releases a savepoint: the test's outer transaction is still rolled back. A live server's
    threads have no app context here and need neither.
    """
    from flask import g, has_app_context

    from crm.transaction import commit

    def wsgi(environ, start_response):
        if has_app_context():
            commit()  # may run event subscribers, which can leave state in `g`...
            vars(g._get_current_object()).clear()  # ...so `g` is cleared after it
        return wsgi_app(environ, start_response)

    return wsgi


@pytest.fixture
def client(app):
    return app.test_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytest_plugins = ["tests.factories", "tests.live"]
