"""Accounts through the API: register, login, logout, password reset, invitations."""

import re

from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import AuditEntry, User
from crm.tenancy import organization_context
from tests.api import assert_error, emailed_token
from tests.factories import PASSWORD, bearer, login, make_user, run_jobs

REGISTRATION = {"organization_name": "Nile Traders", "full_name": "Salma Hassan",
                "email": "salma@nile.example", "password": PASSWORD, "language": "en"}


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_register_answers_a_token_the_admin_and_the_organization(client):
    """Register creates the organization and its admin and answers 201 with a working token."""
    response = client.post("/api/auth/register", json=REGISTRATION)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert body["user"]["email"] == "salma@nile.example"
    assert body["user"]["role"] == "admin"
    assert body["user"]["created_at"].endswith("Z")
    assert body["organization"]["name"] == "Nile Traders"
    assert body["organization"]["default_language"] == "en"
    assert set(body["organization"]) == {"id", "name", "slug", "default_language", "timezone",
                                         "country", "created_at"}
    me = client.get("/api/users/me", headers=_auth(body["access_token"]))
    assert me.status_code == 200
    assert me.get_json() == body["user"]


def test_register_with_a_short_password_changes_nothing(client):
    """A too-short password is a 422 on `password` and creates no organization or account."""
    response = client.post("/api/auth/register", json={**REGISTRATION, "password": "short"})
    assert assert_error(response, 422, "validation_error")["fields"].keys() == {"password"}
    assert services.login_candidates(REGISTRATION["email"]) == []


def test_login_answers_a_token_and_records_the_login(client, org):
    """Correct credentials answer 200 with a token for that user; last_login_at is set."""
    admin_id = org.admin.id
    response = client.post("/api/auth/login", json={"email": org.admin.email,
                                                    "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "user"}
    assert body["user"]["id"] == admin_id
    assert body["user"]["last_login_at"] is not None
    assert client.get("/api/users/me", headers=_auth(body["access_token"])).status_code == 200


def test_login_with_a_wrong_password_is_401(client, org):
    """A wrong password answers 401 with the error shape and no token."""
    response = client.post("/api/auth/login", json={"email": org.admin.email,
                                                    "password": "not the password"})
    error = assert_error(response, 401, "unauthorized")
    assert "access_token" not in response.get_json()
    assert error["fields"] == {}


def test_login_is_rate_limited_per_account(app, client, org):
    """After the allowed failed attempts, login answers 429 even with the right password."""
    allowed = int(app.config["RATELIMIT_LOGIN_PER_ACCOUNT"].split()[0])
    email = org.admin.email
    wrong = {"email": email, "password": "not the password"}
    for _ in range(allowed):
        assert client.post("/api/auth/login", json=wrong).status_code == 401
    response = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert_error(response, 429, "rate_limited")


def test_login_page_and_api_share_one_allowance_per_account(app, client, org):
    """Failures on the login page count against the API login too, and the other way round."""
    allowed = int(app.config["RATELIMIT_LOGIN_PER_ACCOUNT"].split()[0])
    email = org.admin.email
    for attempt in range(allowed):
        if attempt % 2:
            client.post("/api/auth/login", json={"email": email, "password": "wrong password"})
        else:
            client.post("/login", data={"email": email, "password": "wrong password"})
    response = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert_error(response, 429, "rate_limited")
    assert client.post("/login", data={"email": email, "password": PASSWORD}).status_code == 429


def test_logout_revokes_that_token_only(client, org):
    """After logout the token answers 401 at once; the user's other tokens and browser
    sessions go on."""
    other = bearer(org.admin)
    browser = client.application.test_client()
    login(browser, org.admin)
    token = client.post("/api/auth/login", json={"email": org.admin.email,
                                                 "password": PASSWORD}).get_json()["access_token"]
    assert client.post("/api/auth/logout", headers=_auth(token)).status_code == 204
    assert_error(client.get("/api/users/me", headers=_auth(token)), 401, "unauthorized")
    assert_error(client.post("/api/auth/logout", headers=_auth(token)), 401)
    assert client.get("/api/users/me", headers=other).status_code == 200
    assert browser.get("/profile").status_code == 200


def test_each_login_is_a_session_of_its_own(client, org):
    """Two logins answer two different tokens, each a session the profile lists."""
    credentials = {"email": org.admin.email, "password": PASSWORD}
    first, second = (client.post("/api/auth/login", json=credentials).get_json()["access_token"]
                     for _ in range(2))
    assert first != second
    login(client, org.admin)
    assert len(re.findall(r'action="/profile/sessions/\d+/end"', client.get("/profile").text)) == 2


def test_logout_without_a_token_is_401(client):
    """Logout needs a bearer token; a session cookie or nothing answers 401."""
    assert_error(client.post("/api/auth/logout"), 401, "unauthorized")
    assert_error(client.post("/api/auth/logout", headers={"Authorization": "Bearer nonsense"}),
                 401)


def test_forgot_password_answers_the_same_whether_or_not_the_email_exists(app, client, org):
    """Known and unknown addresses get the same 202 body; only the known one gets an email."""
    org_id, email = org.id, org.admin.email
    known = client.post("/api/auth/forgot-password", json={"email": email})
    unknown = client.post("/api/auth/forgot-password", json={"email": "nobody@nowhere.example"})
    assert known.status_code == unknown.status_code == 202
    assert known.get_json() == unknown.get_json()
    run_jobs(app)
    assert emailed_token(org_id, email)


def test_password_reset_through_the_api(app, client, org):
    """The emailed token sets a new password once; the old password and old tokens stop."""
    org_id, email, old_token = org.id, org.admin.email, bearer(org.admin)
    client.post("/api/auth/forgot-password", json={"email": email})
    run_jobs(app)
    token = emailed_token(org_id, email)
    new = {"token": token, "password": "a brand new password"}
    response = client.post("/api/auth/reset-password", json=new)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert_error(client.post("/api/auth/reset-password", json=new), 422)  # single use
    assert_error(client.get("/api/users/me", headers=old_token), 401)
    assert client.post("/api/auth/login", json={"email": email,
                                                "password": PASSWORD}).status_code == 401
    assert client.post("/api/auth/login", json={"email": email,
                                                "password": new["password"]}).status_code == 200


def test_reset_password_with_a_bad_token_is_422_on_token(client):
    """An unknown or malformed token answers 422 naming `token`."""
    for token in ("1.not-a-real-secret-at-all-xxxxxxxx", "garbage", ""):
        response = client.post("/api/auth/reset-password",
                               json={"token": token, "password": "a brand new password"})
        assert assert_error(response, 422)["fields"].keys() == {"token"}


def test_invite_and_accept_through_the_api(app, client, org):
    """An admin invites; the emailed token creates the user in that organization with the role."""
    org_id = org.id
    response = client.post("/api/users/invite", headers=bearer(org.admin),
                           json={"email": "Omar@Example.com", "role": "manager",
                                 "language": "en"})
    assert response.status_code == 201, response.get_json()
    invitation = response.get_json()
    assert set(invitation) == {"id", "email", "role", "language", "status", "expires_at",
                               "created_at"}
    assert (invitation["email"], invitation["role"], invitation["status"]) == (
        "omar@example.com", "manager", "pending")
    run_jobs(app)
    token = emailed_token(org_id, "omar@example.com")

    accepted = client.post("/api/auth/accept-invitation",
                           json={"token": token, "full_name": "Omar Farouk",
                                 "password": PASSWORD})
    assert accepted.status_code == 201, accepted.get_json()
    body = accepted.get_json()
    assert body["user"]["role"] == "manager"
    assert body["user"]["preferred_language"] == "en"
    me = client.get("/api/users/me", headers=_auth(body["access_token"]))
    assert me.get_json()["email"] == "omar@example.com"
    with organization_context(org_id):
        assert db.session.get(User, body["user"]["id"]).organization_id == org_id
        assert db.session.scalar(db.select(db.func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "invitation.accepted")) == 1
    again = client.post("/api/auth/accept-invitation",
                        json={"token": token, "full_name": "Omar", "password": PASSWORD})
    assert assert_error(again, 422)["fields"].keys() == {"token"}


def test_accept_invitation_with_a_bad_token_creates_nobody(client, org):
    """A made-up token answers 422 on `token` and no user is created."""
    org_id = org.id
    response = client.post("/api/auth/accept-invitation",
                           json={"token": f"{org_id}.{'x' * 43}", "full_name": "Mallory",
                                 "password": PASSWORD})
    assert assert_error(response, 422)["fields"].keys() == {"token"}
    with organization_context(org_id):
        assert db.session.scalar(db.select(db.func.count()).select_from(User)) == 1


def test_an_agent_cannot_invite(client, org):
    """An agent gets 403 on /api/users/invite and no invitation is made."""
    org_id, agent = org.id, make_user(org, "agent")
    response = client.post("/api/users/invite", headers=bearer(agent),
                           json={"email": "friend@example.com", "role": "admin"})
    assert_error(response, 403, "forbidden")
    with organization_context(org_id):
        assert db.session.scalar(db.select(db.func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "invitation.sent")) == 0
