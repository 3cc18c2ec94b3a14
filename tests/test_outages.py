"""Outages of PostgreSQL and Redis, with real processes: while one is down, every request that
needs it answers 503 with Retry-After (JSON for the API and webhooks, a translated page
otherwise), never a 500; once it is back the same requests work again, without a restart.

The servers are the tests' own, under a temporary folder, stopped and started again by the
tests (the run's shared servers are never touched); the app is served over HTTP and Socket.IO
from a thread, as `crm up` serves it (tests/live.py).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import socketio as socketio_client
from flask_migrate import upgrade
from sqlalchemy import select, text

from crm import embedded
from crm.extensions import db
from crm.foundation.models import Invitation, Organization, OutboundEmail, User
from crm.realtime import emit_to_org, message_channel
from tests.conftest import _settings
from tests.factories import PASSWORD, bearer, login, make_user
from tests.live import (
    TIMEOUT,
    Account,
    LiveServer,
    app_like,
    csrf_token,
    fresh_app,
    serve,
    wait_until,
)
from tests.whatsapp.factories import make_profile
from tests.whatsapp.test_cloud import payload, signature

ARABIC = re.compile(r"[\u0600-\u06FF]")
UNAVAILABLE = "The service is temporarily unavailable. Please try again in a few seconds."
RETRY_AFTER = "5"
APP_SECRET = "the-outage-profiles-app-secret"


class Site:
    """The app, served on a PostgreSQL and a Redis of its own that the tests stop and start."""

    def __init__(self, base: Path):
        self.base = base
        self.postgres = embedded.start_postgres(base, fsync=False)
        self.redis = embedded.start_redis(base, persist=False)
        self.live: LiveServer | None = None

    def settings(self) -> dict:
        redis_url = self.redis.url
        return _settings("wasl", 0) | {
            "DATABASE_URL": self.postgres.url(embedded.APP_ROLE),
            "MIGRATION_DATABASE_URL": self.postgres.url(embedded.OWNER_ROLE),
            "REDIS_URL": redis_url, "RATELIMIT_STORAGE_URI": redis_url,
            "INSTANCE_PATH": self.base / "instance",
            "PROPAGATE_EXCEPTIONS": False,  # as in production: the app answers its failures
        }

    @contextmanager
    def postgres_down(self) -> Iterator[None]:
        """Stop PostgreSQL (fast shutdown: open connections are cut) for the block."""
        embedded.stop_postgres(self.postgres)
        assert not embedded._is_listening(self.postgres.port), "PostgreSQL did not stop"
        try:
            yield
        finally:
            self.postgres = embedded.start_postgres(self.base, fsync=False)

    @contextmanager
    def redis_down(self) -> Iterator[None]:
        """Stop Redis for the block, and start it again on the same port."""
        embedded.stop_redis(self.redis)
        try:
            yield
        finally:
            self.redis = embedded.start_redis(self.base, persist=False)

    def stop(self) -> None:
        embedded.stop_redis(self.redis)
        embedded.stop_postgres(self.postgres)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    # Not under pytest's own temporary folder: any pytest run starting on the machine makes
    # that private again, and PostgreSQL runs as a user of its own (crm/embedded.py).
    site = Site(Path(tempfile.mkdtemp(prefix="wasl-outages-")))
    try:
        settings = site.settings()
        with fresh_app(settings) as app:
            with app.app_context():
                upgrade()
            try:
                with serve(app, settings) as live:
                    live.wait_until_listening()
                    site.live = live
                    yield site
            finally:
                with app.app_context():
                    db.engine.dispose()
    finally:
        site.stop()
        shutil.rmtree(site.base, ignore_errors=True)


@dataclass(frozen=True)
class Caller:
    """An organization's admin, with every way in opened before the outage."""

    account: Account
    browser: requests.Session  # logged in through the login page
    token: dict[str, str]  # an API bearer token
    visitor: requests.Session  # on the login page, with its CSRF token
    login_form: dict[str, str]
    webhook: str  # the URL of a cloud number's webhook
    delivery: bytes  # a message Meta delivers to that number

    @classmethod
    def of(cls, live: LiveServer) -> Caller:
        account = live.make_account()
        with live.transaction(account.organization_id):
            organization = db.session.get(Organization, account.organization_id)
            token = bearer(db.session.get(User, account.user_id))
            phone_number_id = f"90{account.organization_id:013d}"
            profile_id = make_profile(organization, phone_number_id=phone_number_id,
                                      app_secret=APP_SECRET).id
        visitor = requests.Session()
        page = visitor.get(f"{live.url}/login", timeout=TIMEOUT)
        form = {"email": account.email, "password": PASSWORD, "csrf_token": csrf_token(page.text)}
        return cls(account, live.browser(account), token, visitor, form,
                   f"{live.url}/webhooks/whatsapp/{profile_id}",
                   payload("text", phone_number_id=phone_number_id))

    def api(self, live: LiveServer, language: str = "en") -> requests.Response:
        return requests.get(f"{live.url}/api/users/me", timeout=TIMEOUT,
                            headers={**self.token, "Accept-Language": language})

    def api_login(self, live: LiveServer) -> requests.Response:
        return requests.post(f"{live.url}/api/auth/login", timeout=TIMEOUT,
                             json={"email": self.account.email, "password": PASSWORD})

    def page(self, live: LiveServer, language: str = "ar") -> requests.Response:
        return self.browser.get(f"{live.url}/", headers={"Accept-Language": language},
                                timeout=TIMEOUT, allow_redirects=False)

    def log_in(self, live: LiveServer, language: str = "en") -> requests.Response:
        return self.visitor.post(f"{live.url}/login", data=self.login_form, timeout=TIMEOUT,
                                 headers={"Accept-Language": language}, allow_redirects=False)

    def deliver(self) -> requests.Response:
        return requests.post(self.webhook, data=self.delivery, timeout=TIMEOUT, headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(self.delivery, APP_SECRET)})

    def cookie(self, live: LiveServer) -> str:
        return live.cookie_of(self.browser)


def assert_unavailable_json(response: requests.Response, language: str = "en") -> None:
    """503 with Retry-After and the API's error shape, its message in `language`."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == ("unavailable", {})
    if language == "en":
        assert error["message"] == UNAVAILABLE
    else:
        assert ARABIC.search(error["message"]), error["message"]


def assert_unavailable_page(response: requests.Response, language: str) -> None:
    """503 with Retry-After and a page in `language` that says so."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert response.headers["Content-Type"].startswith("text/html")
    direction = "rtl" if language == "ar" else "ltr"
    assert f'<html lang="{language}" dir="{direction}">' in response.text
    assert (UNAVAILABLE in response.text) == (language == "en"), response.text
    assert ARABIC.search(response.text) if language == "ar" else True


def assert_socket_refused(live: LiveServer, cookie: str) -> None:
    """A socket is refused as unavailable (not left without an answer by a crash)."""
    with pytest.raises(socketio_client.exceptions.ConnectionError) as refusal, \
            live.socket(cookie):
        pass
    assert "unavailable" in str(refusal.value)


def readiness(live: LiveServer) -> dict:
    """What /readyz says of each server (its status code agreeing)."""
    answer = requests.get(f"{live.url}/readyz", timeout=TIMEOUT)
    assert answer.status_code == (200 if answer.json()["status"] == "ok" else 503)
    return answer.json()["checks"]


@pytest.mark.live
def test_a_postgresql_outage_answers_503_and_heals_by_itself(site, monkeypatch):
    """While PostgreSQL is down, the API, pages, the login form, webhooks and sockets answer
    503 with Retry-After; pages speak the request's language (the user cannot be loaded). A
    login refused that way is no failed attempt; the login page itself still shows. Once
    PostgreSQL is back, everything works again with no restart of the app."""
    live = site.live
    monkeypatch.setitem(live.app.config, "RATELIMIT_LOGIN_PER_ACCOUNT", "1 per hour")
    caller = Caller.of(live)
    with site.postgres_down():
        assert_unavailable_json(caller.api(live, "en"), "en")
        assert_unavailable_json(caller.api(live, "ar"), "ar")
        assert_unavailable_json(caller.api_login(live), "ar")  # no Accept-Language: Arabic
        assert_unavailable_page(caller.page(live, "ar"), "ar")
        assert_unavailable_page(caller.page(live, "en"), "en")
        assert_unavailable_page(caller.log_in(live, "en"), "en")
        assert_unavailable_json(caller.deliver(), "ar")
        assert_socket_refused(live, caller.cookie(live))
        assert readiness(live)["database"].startswith("error")
        # What needs no stored data still works.
        assert requests.get(f"{live.url}/login", timeout=TIMEOUT).status_code == 200

    assert caller.api(live).json()["email"] == caller.account.email
    assert caller.page(live).status_code == 200
    assert caller.log_in(live).status_code == 303
    assert caller.deliver().status_code == 200
    with live.socket(caller.cookie(live)):
        pass
    assert readiness(live) == {"database": "ok", "redis": "ok"}


@pytest.mark.live
def test_a_redis_outage_answers_503_where_redis_is_needed_and_heals_by_itself(site, caplog):
    """While Redis is down, what needs it answers 503 with Retry-After, never 500: the API
    and logins (their rate limits), webhooks (their per-number limit) and sockets. Pages keep
    working, an invitation is kept though its email cannot be queued yet, and a page closed
    meanwhile costs a log line, not a traceback. Once Redis is back, everything works again
    with no restart, live events included."""
    live = site.live
    caller = Caller.of(live)
    team = caller.browser.get(f"{live.url}/team", timeout=TIMEOUT)
    with live.socket(caller.cookie(live), transport="websocket") as socket, site.redis_down():
        socket.client.disconnect()
        wait_until(lambda: any("redis unavailable (closing a socket)" in record.getMessage()
                               for record in caplog.records), "the closed socket noted")
        # The user is loaded (from the database): their language wins over the browser's.
        assert_unavailable_json(caller.api(live, "en"), "ar")
        assert_unavailable_json(caller.api_login(live), "ar")  # no Accept-Language: Arabic
        assert_unavailable_page(caller.log_in(live, "ar"), "ar")
        assert_unavailable_json(caller.deliver(), "ar")
        assert_socket_refused(live, caller.cookie(live))
        assert readiness(live)["redis"].startswith("error")

        assert caller.page(live).status_code == 200
        assert requests.get(f"{live.url}/login", timeout=TIMEOUT).status_code == 200
        invited = caller.browser.post(f"{live.url}/team/invitations", timeout=TIMEOUT, data={
            "email": "newcomer@outage.example", "role": "agent",
            "csrf_token": csrf_token(team.text)}, allow_redirects=False)
        assert invited.status_code == 303
        with live.transaction(caller.account.organization_id):
            assert db.session.scalar(select(Invitation.email)) == "newcomer@outage.example"
            assert db.session.scalar(select(OutboundEmail.to_address).where(
                OutboundEmail.status == "queued")) == "newcomer@outage.example"
        assert not [record for record in caplog.records if record.exc_info
                    and record.name.startswith(("engineio", "socketio"))]

    assert caller.api(live).status_code == 200
    assert caller.api_login(live).status_code == 200
    assert caller.log_in(live).status_code == 303
    assert caller.deliver().status_code == 200
    assert readiness(live) == {"database": "ok", "redis": "ok"}
    with live.socket(caller.cookie(live)) as socket:
        _wait_for_live_events(live)
        with live.transaction(caller.account.organization_id):
            emit_to_org("outageOver", {"n": 1})
        socket.wait_for("outageOver", {"n": 1})


@pytest.mark.live
def test_a_page_open_through_a_redis_outage_is_told_to_fetch_again(site, caplog):
    """A page's socket stays connected while Redis is down (the web process serves it), so
    the page is not told that the events published meanwhile are lost, nor those published
    after Redis is back and before the server's listener subscribes again (it retries with a
    growing pause). Once it has, the server tells each of its sockets to "resync", and pages
    fetch again what they show, as after a reconnect; events reach them again."""
    live = site.live
    caller = Caller.of(live)
    with live.socket(caller.cookie(live), transport="websocket") as socket:
        with site.redis_down():
            wait_until(lambda: any("Cannot receive from redis" in record.getMessage()
                                   for record in caplog.records), "the listener losing Redis")
            assert socket.client.connected
            assert ("resync", {}) not in socket.events
        wait_until(lambda: ("resync", {}) in socket.events,
                   "the server telling its sockets to fetch again", timeout=65)
        assert socket.client.connected
        with live.transaction(caller.account.organization_id):
            emit_to_org("outageOver", {"n": 2})
        socket.wait_for("outageOver", {"n": 2})
    assert [event for event, _data in socket.events].count("resync") == 1


def _wait_for_live_events(live: LiveServer) -> None:
    """Wait until the app hears its Socket.IO channel again: after a Redis outage its listener
    reconnects with a growing pause, of at most a minute."""
    redis = live.app.extensions["crm.redis"]
    channel = message_channel(live.settings["REDIS_URL"])
    wait_until(lambda: redis.pubsub_numsub(channel)[0][1] > 0,
               "the app subscribing to its channel again", timeout=65)


def test_an_unexpected_error_answers_500_without_asking_the_database(app, org):
    """A bug that breaks the request's transaction (a failed statement) answers the 500 page
    in the user's language, built without a query (none would work), or JSON on the API."""
    user = make_user(org, "agent", language="en")
    with app_like(app, PROPAGATE_EXCEPTIONS=False) as broken:
        for path in ("/broken", "/api/broken"):
            broken.add_url_rule(path, path, lambda: db.session.execute(text("SELECT 1 / 0")))
        client = broken.test_client()
        login(client, user)
        page = client.get("/broken", headers={"Accept-Language": "ar"})
        api = client.get("/api/broken", headers={**bearer(user), "Accept-Language": "ar"})
    assert page.status_code == 500
    assert '<html lang="en" dir="ltr">' in page.text
    assert "Something went wrong on our side. Please try again." in page.text
    assert api.status_code == 500
    assert api.get_json()["error"] == {
        "code": "error", "message": "Something went wrong on our side. Please try again.",
        "fields": {}}
