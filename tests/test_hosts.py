"""Which host the app answers to and builds links for: PUBLIC_URL, never the request's Host.

A password-reset link built from the Host header would mail a real user a valid token on an
attacker's host; so emailed links come from PUBLIC_URL, and a request naming any other host is
refused before it reaches a view. Behind a proxy, TRUSTED_PROXIES lets the app see the real
client and scheme.
"""

from __future__ import annotations

from contextlib import contextmanager

from flask import Flask
from sqlalchemy import select

from crm.extensions import db
from crm.foundation.models import AuditEntry
from crm.tenancy import organization_context
from tests.conftest import CsrfClient
from tests.factories import PASSWORD, bearer, run_jobs
from tests.foundation import emails_to, ident
from tests.live import app_like

PRODUCTION_URL = "https://crm.example.com"


@contextmanager
def other_app(app: Flask, **overrides):
    """An app like the test session's but for `overrides`; its test client."""
    with app_like(app, **overrides) as built:
        built.test_client_class = CsrfClient
        yield built.test_client()


def test_a_request_for_another_host_is_refused_and_sends_no_email(app, client, org):
    """`POST /forgot-password` with `Host: evil.example` answers 400 and mails no one."""
    email = org.admin.email
    page = client.post("/forgot-password", data={"email": email},
                       headers={"Host": "evil.example"})
    api = client.post("/api/auth/forgot-password", json={"email": email},
                      headers={"Host": "evil.example"})
    assert page.status_code == 400
    assert api.status_code == 400
    assert api.get_json()["error"]["code"] == "bad_request"
    run_jobs(app)
    assert emails_to(org, email) == []


def test_emailed_links_come_from_public_url_whatever_the_host(app, client, org, monkeypatch):
    """A reset or invitation requested through another name of the server still links to
    PUBLIC_URL."""
    monkeypatch.setitem(app.config, "PUBLIC_URL", PRODUCTION_URL)
    email, admin = org.admin.email, bearer(org.admin)
    other_name = {"Host": "127.0.0.1:8000"}
    client.post("/api/auth/forgot-password", json={"email": email}, headers=other_name)
    client.post("/api/users/invite", json={"email": "new@team.example", "role": "agent"},
                headers=admin | other_name)
    run_jobs(app)
    [reset] = emails_to(org, email)
    [invitation] = emails_to(org, "new@team.example")
    assert f"{PRODUCTION_URL}/reset-password/" in reset.body_text
    assert f"{PRODUCTION_URL}/invitations/accept/" in invitation.body_text
    assert "127.0.0.1" not in reset.body_text + invitation.body_text


def test_a_loopback_public_url_answers_to_both_loopback_names(client):
    """In development people type localhost or 127.0.0.1, on any port: both work."""
    for host in ("localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:8000"):
        assert client.get("/login", headers={"Host": host}).status_code == 200, host


def test_a_production_app_answers_only_to_its_public_host(app):
    """With PUBLIC_URL https://crm.example.com, only that host is served; localhost is not."""
    with other_app(app, PUBLIC_URL=PRODUCTION_URL) as client:
        assert client.get("/login", headers={"Host": "crm.example.com"}).status_code == 200
        assert client.get("/login", headers={"Host": "localhost"}).status_code == 400
        assert client.get("/login", headers={"Host": "crm.example.com.evil"}).status_code == 400


def test_health_checks_answer_whatever_host_they_name(app):
    """Load balancers probe /healthz and /readyz by IP address; those alone skip the check."""
    with other_app(app, PUBLIC_URL=PRODUCTION_URL) as client:
        assert client.get("/healthz", headers={"Host": "10.0.3.7:8000"}).status_code == 200
        assert client.get("/readyz", headers={"Host": "10.0.3.7:8000"}).status_code == 200
        assert client.get("/login", headers={"Host": "10.0.3.7:8000"}).status_code == 400


def test_sockets_may_connect_only_to_the_apps_own_origin(app, client):
    """The CSP's connect-src names the app's own origin, not every ws: and wss: host."""
    policy = client.get("/login").headers["Content-Security-Policy"]
    assert "connect-src 'self' ws://localhost ws://127.0.0.1;" in policy
    with other_app(app, PUBLIC_URL=PRODUCTION_URL) as production:
        policy = production.get("/login", headers={"Host": "crm.example.com"}).headers[
            "Content-Security-Policy"]
    assert "connect-src 'self' wss://crm.example.com;" in policy


def _last_login_ip(org) -> str | None:
    with organization_context(ident(org)):
        return db.session.scalars(select(AuditEntry.ip_address).where(
            AuditEntry.action == "user.login").order_by(AuditEntry.id.desc())).first()


FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def test_behind_a_trusted_proxy_the_app_sees_the_real_client_and_scheme(app, org):
    """With TRUSTED_PROXIES=1 the audit log records the forwarded client and HSTS is sent."""
    email = org.admin.email
    with other_app(app, TRUSTED_PROXIES=1) as client:
        # Over HTTPS, CSRF protection also wants the page's address, as browsers send it.
        response = client.post("/login", data={"email": email, "password": PASSWORD},
                               headers=FORWARDED | {"Referer": "https://localhost/login"})
    assert response.status_code == 303
    assert "Strict-Transport-Security" in response.headers
    assert _last_login_ip(org) == "203.0.113.7"


def test_without_trusted_proxies_forwarded_headers_are_ignored(app, client, org):
    """Without TRUSTED_PROXIES anyone could claim an address or HTTPS: the headers are ignored."""
    response = client.post("/login", data={"email": org.admin.email, "password": PASSWORD},
                           headers=FORWARDED)
    assert response.status_code == 303
    assert "Strict-Transport-Security" not in response.headers
    assert _last_login_ip(org) == "127.0.0.1"

