"""Rate limits beyond login: the public forms (register, forgot-password, reset-password,
accept-invitation) per IP and per email, and the whole API per organization.

A page and its API twin share one allowance, so switching between them buys nothing.
Each test sets small limits; the defaults are in crm/config.py.
"""

from __future__ import annotations

import pytest

from tests.api import assert_error
from tests.factories import PASSWORD, bearer, login, make_user, run_jobs
from tests.foundation import emails_to

MADE_UP_TOKEN = "1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@pytest.fixture
def limits(app, monkeypatch):
    """Set the limits under test (generous by default, so only the one tested bites)."""

    def set_limits(per_ip: str = "1000 per hour", per_email: str = "1000 per hour",
                   per_org: str = "1000 per minute") -> None:
        monkeypatch.setitem(app.config, "RATELIMIT_PUBLIC_PER_IP", per_ip)
        monkeypatch.setitem(app.config, "RATELIMIT_PUBLIC_PER_EMAIL", per_email)
        monkeypatch.setitem(app.config, "RATELIMIT_API_PER_ORG", per_org)

    return set_limits


def _registration(email: str) -> dict:
    return {"organization_name": "Nile Traders", "full_name": "Salma Hassan", "email": email,
            "password": PASSWORD, "language": "en"}


def test_register_is_limited_per_email_across_page_and_api(app, limits):
    """Registrations for one email count together, page or API; another email still works."""
    limits(per_email="2 per hour")
    email = "salma@nile.example"
    assert app.test_client().post("/register", data=_registration(email)).status_code == 303
    assert app.test_client().post("/api/auth/register",
                                  json=_registration(email)).status_code == 201
    assert_error(app.test_client().post("/api/auth/register", json=_registration(email)),
                 429, "rate_limited")
    assert app.test_client().post("/register", data=_registration(email)).status_code == 429
    assert app.test_client().post(
        "/api/auth/register", json=_registration("SALMA@nile.example ")).status_code == 429
    assert app.test_client().post("/api/auth/register",
                                  json=_registration("omar@nile.example")).status_code == 201


def test_register_is_limited_per_ip(app, limits):
    """Past the allowance, one address cannot create more organizations, whatever the email."""
    limits(per_ip="2 per hour")
    client = app.test_client()
    for n in range(2):
        response = client.post("/api/auth/register", json=_registration(f"a{n}@nile.example"))
        assert response.status_code == 201
    response = client.post("/api/auth/register", json=_registration("a3@nile.example"))
    assert_error(response, 429, "rate_limited")
    assert "Retry-After" in response.headers
    assert app.test_client().post("/register",
                                  data=_registration("a4@nile.example")).status_code == 429


def test_forgot_password_is_limited_per_email(app, client, org, limits):
    """Past the allowance for one address, no more reset emails go to it (page or API)."""
    limits(per_email="2 per hour")
    email = org.admin.email
    assert client.post("/forgot-password", data={"email": email}).status_code == 303
    assert client.post("/api/auth/forgot-password", json={"email": email}).status_code == 202
    assert client.post("/forgot-password", data={"email": email.upper()}).status_code == 429
    assert_error(client.post("/api/auth/forgot-password", json={"email": email}), 429,
                 "rate_limited")
    run_jobs(app)
    assert len(emails_to(org, email)) == 2
    assert client.post("/api/auth/forgot-password",
                       json={"email": "other@nowhere.example"}).status_code == 202


def test_forgot_password_is_limited_per_ip(client, limits):
    """One address cannot ask for resets of ever new emails."""
    limits(per_ip="2 per hour")
    for n in range(2):
        assert client.post("/forgot-password",
                           data={"email": f"n{n}@nowhere.example"}).status_code == 303
    response = client.post("/api/auth/forgot-password", json={"email": "n3@nowhere.example"})
    assert_error(response, 429, "rate_limited")


@pytest.mark.parametrize(("page", "api", "body"), [
    ("/reset-password/{token}", "/api/auth/reset-password",
     {"password": "a brand new password", "password_confirmation": "a brand new password"}),
    ("/invitations/accept/{token}", "/api/auth/accept-invitation",
     {"full_name": "Guess Work", "password": PASSWORD}),
])
def test_guessing_tokens_is_limited_per_ip(client, limits, page, api, body):
    """Failed attempts with made-up tokens, page or API, run out; then even a real one waits."""
    limits(per_ip="2 per hour")
    assert client.post(page.format(token=MADE_UP_TOKEN), data=body).status_code == 400
    assert client.post(api, json={**body, "token": MADE_UP_TOKEN}).status_code == 422
    assert client.post(page.format(token=MADE_UP_TOKEN), data=body).status_code == 429
    assert_error(client.post(api, json={**body, "token": MADE_UP_TOKEN}), 429, "rate_limited")


def test_the_api_is_limited_per_organization(client, org, other_org, limits):
    """Every /api request of an organization counts, whoever makes it; past the allowance the
    API answers 429 with Retry-After; another organization is not affected."""
    limits(per_org="3 per minute")
    admin, colleague = bearer(org.admin), bearer(make_user(org, "agent"))
    stranger = bearer(other_org.admin)
    assert client.get("/api/users/me", headers=admin).status_code == 200
    assert client.get("/api/users", headers=colleague).status_code == 403  # counts too
    assert client.get("/api/users/me", headers=colleague).status_code == 200
    response = client.get("/api/users/me", headers=admin)
    assert_error(response, 429, "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert client.get("/api/users/me", headers=stranger).status_code == 200


def test_asking_to_change_the_email_address_is_limited(client, org, limits):
    """Each ask mails two addresses and checks a password: page and API share one allowance
    per IP, and a wrong password spends it too (no guessing the password through this form)."""
    limits(per_ip="2 per hour")
    headers = bearer(org.admin)
    login(client, org.admin)
    body = {"new_email": "new@example.com", "current_password": "a guess"}
    assert client.post("/profile/email", data=body).status_code == 422
    assert client.post("/api/users/me/email-change", json=body,
                       headers=headers).status_code == 422
    assert client.post("/profile/email", data={**body, "current_password": PASSWORD}
                       ).status_code == 429
    assert_error(client.post("/api/users/me/email-change/link", headers=headers), 429,
                 "rate_limited")
