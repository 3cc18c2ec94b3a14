"""A browser session left unused for longer than `SESSION_IDLE_LIFETIME` is signed out; API
tokens (which expire with their JWT) and API keys (made for integrations) are not."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from crm.extensions import db
from crm.foundation.models import UserSession
from crm.models import utcnow
from crm.tenancy import organization_context
from tests.factories import bearer, make_api_key
from tests.foundation import ident, log_in


def _last_seen(org, days_ago: float, kind: str = "browser") -> None:
    """Make the organization's live sessions of `kind` last seen `days_ago`."""
    with organization_context(ident(org)):
        db.session.execute(update(UserSession).where(UserSession.kind == kind)
                           .values(last_seen_at=utcnow() - timedelta(days=days_ago)))


def _browser(app, org):
    browser = app.test_client()
    assert log_in(browser, org.admin.email).status_code == 303
    return browser


def test_a_browser_unused_for_longer_than_the_idle_lifetime_must_log_in_again(app, org):
    browser = _browser(app, org)
    idle_days = app.config["SESSION_IDLE_LIFETIME"].days
    _last_seen(org, idle_days + 1)
    response = browser.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_a_browser_seen_within_the_idle_lifetime_stays_signed_in_and_is_seen_again(app, org):
    browser = _browser(app, org)
    idle_days = app.config["SESSION_IDLE_LIFETIME"].days
    _last_seen(org, idle_days - 1)
    assert browser.get("/").status_code == 200
    # that visit counts as use: the session is seen now, so its idle time starts again
    with organization_context(ident(org)):
        seen = db.session.scalars(
            db.select(UserSession.last_seen_at).where(UserSession.kind == "browser")).one()
    assert utcnow() - seen < timedelta(minutes=1)


def test_api_keys_and_tokens_do_not_idle_out(app, org):
    key = make_api_key(org)
    token = bearer(org.admin)
    _last_seen(org, 400, kind="api_key")
    _last_seen(org, 400, kind="api_token")
    client = app.test_client()
    assert client.get("/api/users/me", headers={"Authorization": f"Bearer {key.credential}"}
                      ).status_code == 200
    assert client.get("/api/users/me", headers=token).status_code == 200


def test_an_idle_session_is_no_longer_listed_on_the_profile(app, org):
    here = _browser(app, org)
    _browser(app, org)
    with organization_context(ident(org)):
        [older, _] = db.session.scalars(db.select(UserSession.id).where(
            UserSession.kind == "browser").order_by(UserSession.id))
        db.session.execute(update(UserSession).where(UserSession.id == older).values(
            last_seen_at=utcnow() - app.config["SESSION_IDLE_LIFETIME"] - timedelta(hours=1)))
    page = here.get("/profile").text
    assert f"/profile/sessions/{older}/end" not in page
