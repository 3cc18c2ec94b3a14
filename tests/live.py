"""A live server for tests that need real processes: Socket.IO clients, RQ workers, browsers.

`live_server` serves a second app over HTTP and Socket.IO (threading mode, as in production) on
a free port of loopback. It has a database of its own, copied from the migrated template
(`wasl_live_<worker>`), and a Redis database of its own. Its data is committed, so a test that
uses it is marked `@pytest.mark.live` (the per-test rollback leaves it alone) and makes its own
organizations; the database is dropped when the module's tests are done.
"""

from __future__ import annotations

import copy
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import requests
import socketio as socketio_client
from flask import Flask
from werkzeug.serving import make_server

from crm import create_app
from crm.config import Config
from crm.extensions import db, limiter, socketio
from crm.realtime import emit_to_org, message_channel
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.conftest import ROOT, _server, _settings, create_database, worker_number
from tests.factories import PASSWORD, make_org

TIMEOUT = 10.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll `condition` until it returns something true; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.01)
    return result


@contextmanager
def fresh_app(settings: dict) -> Iterator[Flask]:
    """Create another app, and give the test session's app its extensions back afterwards.

    Socket.IO and the rate limiter hold one server and one storage per process, which every
    create_app() rebinds to its own Redis.
    """
    saved = [(extension, {key: copy.copy(value) if isinstance(value, dict) else value
                          for key, value in vars(extension).items()})
             for extension in (socketio, limiter)]
    try:
        yield create_app(settings)
    finally:
        for extension, state in saved:
            vars(extension).clear()
            vars(extension).update(state)


# What the test session's app is built from (tests/conftest.py `_settings`).
_SESSION_SETTINGS = ("TESTING", "SECRET_KEY", "DATABASE_URL", "MIGRATION_DATABASE_URL",
                     "REDIS_URL", "RATELIMIT_STORAGE_URI", "INSTANCE_PATH", "PUBLIC_URL")


@contextmanager
def app_like(app: Flask, **overrides: Any) -> Iterator[Flask]:
    """Another app on `app`'s database and Redis, built with `overrides` (see fresh_app)."""
    with fresh_app({key: app.config[key] for key in _SESSION_SETTINGS} | overrides) as built:
        yield built


@dataclass(frozen=True)
class Account:
    """An organization's admin on the live server (plain values: its rows live elsewhere)."""

    organization_id: int
    user_id: int
    email: str


class SocketProbe:
    """A Socket.IO client that records every event it receives."""

    def __init__(self, url: str, cookie: str | None = None, origin: str | None = None,
                 transport: str = "polling"):
        self.url = url
        self.headers = {"Cookie": cookie} if cookie else {}
        self.transport = transport
        self.events: list[tuple[str, Any]] = []
        options = {"origin": origin} if origin else {}
        self.client = socketio_client.Client(reconnection=False, websocket_extra_options=options)
        self.client.on("*", self._record)

    def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    def connect(self) -> SocketProbe:
        """Connect, or raise ConnectionError when the server refuses."""
        outcome: queue.Queue[str | None] = queue.Queue()
        self.client.on("connect", lambda: outcome.put(None))
        self.client.on("connect_error", lambda data=None: outcome.put(f"refused: {data}"))
        self.client.connect(self.url, headers=self.headers, transports=[self.transport],
                            wait=False)
        try:
            refusal = outcome.get(timeout=TIMEOUT)
        except queue.Empty:
            refusal = "no answer"
        if refusal is not None:
            self.close()
            raise socketio_client.exceptions.ConnectionError(refusal)
        return self

    def wait_for(self, event: str, data: Any) -> None:
        wait_until(lambda: (event, data) in self.events, f"{event} {data!r} reaching the socket")

    def close(self) -> None:
        """Drop the connection without waiting for the client's reader thread.

        python-engineio's polling client can skip sending CLOSE when it disconnects right
        after sending something, and then waits a whole ping interval (25 s) for its pending
        long-poll; the server times the session out by itself.
        """
        self.client.eio.disconnect(abort=True)


def csrf_token(page: str) -> str:
    """The CSRF token of a page's forms."""
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, "the page has no csrf_token field"
    return token.group(1)


class LiveServer:
    def __init__(self, app: Flask, url: str, settings: dict):
        self.app = app
        self.url = url
        self.settings = settings

    @contextmanager
    def transaction(self, org_id: int | None = None) -> Iterator[None]:
        """Run a block against the live database as `org_id`, and commit it."""
        with self.app.app_context(), organization_context(org_id):
            yield
            commit()

    def make_account(self) -> Account:
        """A committed organization with its admin."""
        with self.transaction():
            org = make_org()
            return Account(org.id, org.admin.id, org.admin.email)

    def browser(self, account: Account, password: str = PASSWORD) -> requests.Session:
        """An HTTP client logged in through the login page, as a browser does."""
        http = requests.Session()
        page = http.get(f"{self.url}/login", timeout=TIMEOUT)
        answer = http.post(f"{self.url}/login", allow_redirects=False, timeout=TIMEOUT,
                           data={"email": account.email, "password": password,
                                 "csrf_token": csrf_token(page.text)})
        assert answer.status_code in (302, 303), f"login answered {answer.status_code}"
        return http

    def session_cookie(self, account: Account, password: str = PASSWORD) -> str:
        """Log in through the login page, as a browser does; the session cookie it sets."""
        return self.cookie_of(self.browser(account, password))

    def cookie_of(self, http: requests.Session) -> str:
        """The session cookie a logged-in HTTP client holds, for a socket to send."""
        name = self.app.config["SESSION_COOKIE_NAME"]
        return f"{name}={http.cookies[name]}"

    @contextmanager
    def socket(self, cookie: str | None = None, origin: str | None = None,
               transport: str = "polling") -> Iterator[SocketProbe]:
        """A connected Socket.IO client (disconnected afterwards).

        Long-polling unless told otherwise: a websocket closes only after a 3 s timeout on the
        development server, and both transports share the authentication, rooms and queue.
        """
        probe = SocketProbe(self.url, cookie, origin, transport).connect()
        try:
            yield probe
        finally:
            probe.close()

    def environment(self) -> dict[str, str]:
        """What a `crm` process needs to work on the live server's database and Redis."""
        settings = self.settings
        return {**os.environ, "DATABASE_URL": settings["DATABASE_URL"],
                "MIGRATION_DATABASE_URL": settings["MIGRATION_DATABASE_URL"],
                "REDIS_URL": settings["REDIS_URL"], "SECRET_KEY": settings["SECRET_KEY"],
                "CRM_INSTANCE_PATH": str(settings["INSTANCE_PATH"]), "PUBLIC_URL": self.url,
                "WHATSAPP_MEDIA_HOSTS": settings["WHATSAPP_MEDIA_HOSTS"], "SMTP_HOST": ""}

    def run_worker(self, queues: tuple[str, ...] = Config.RQ_QUEUES
                   ) -> subprocess.CompletedProcess:
        """Run `crm worker --burst` in a process of its own until the queues are empty (all of
        them, as a plain `crm worker` does, unless told which)."""
        return subprocess.run(
            [sys.executable, "-m", "crm", "worker", "--burst", "--queues", ",".join(queues)],
            cwd=ROOT, env=self.environment(), capture_output=True, text=True,
            timeout=60, check=False)

    def wait_until_listening(self) -> None:
        """Start the server's message-queue listener and wait until it has subscribed.

        The listener starts with the first engine.io session; an emit published before it
        subscribes would be lost.
        """
        redis = self.app.extensions["crm.redis"]
        channel = message_channel(self.settings["REDIS_URL"])

        def subscribers() -> int:
            return redis.pubsub_numsub(channel)[0][1]

        before = subscribers()
        requests.get(f"{self.url}/socket.io/?EIO=4&transport=polling",
                     timeout=TIMEOUT).raise_for_status()
        wait_until(lambda: subscribers() > before, "the live server subscribing to its channel")


def emit_to_current_organization(event: str, data: dict) -> None:
    """A job: emit `event` to the organization the job runs as, from whichever process."""
    emit_to_org(event, data)


def _drop_database(name: str) -> None:
    with psycopg.connect(_server().superuser_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def serve(app: Flask, settings: dict) -> Iterator[LiveServer]:
    """Serve `app` (built from `settings`) over HTTP and Socket.IO on a free port of loopback,
    from a thread, as `crm up` serves it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    live = LiveServer(app, f"http://127.0.0.1:{server.port}", settings)
    app.config["PUBLIC_URL"] = live.url
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield live
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def _live_server_for_module(request) -> Iterator[LiveServer]:
    number = worker_number(request)
    database = f"wasl_live_{number}"
    create_database(database)
    settings = _settings(database, 2 + 2 * number)
    with fresh_app(settings) as app:
        try:
            with serve(app, settings) as live:
                live.wait_until_listening()
                yield live
        finally:
            app.extensions["crm.redis"].flushdb()
            with app.app_context():
                db.engine.dispose()
            _drop_database(database)


@pytest.fixture
def live_server(request, _live_server_for_module) -> LiveServer:
    """The module's live server; only for tests marked `live`, whose data is committed."""
    if request.node.get_closest_marker("live") is None:
        pytest.fail("mark tests that use the live server with @pytest.mark.live")
    return _live_server_for_module
