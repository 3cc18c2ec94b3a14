"""Register, log in, log out, language: the pages anyone meets first."""

from __future__ import annotations

import pytest

from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import User
from crm.tenancy import organization_context
from tests.factories import PASSWORD, bearer, login, make_user
from tests.foundation import arabic, audit_actions, log_in, reload

REGISTRATION = {"organization_name": "Acme Trading", "full_name": "Hala Admin",
                "email": "hala@acme.example", "password": PASSWORD, "language": "en"}


def test_register_creates_the_organization_and_signs_in(client):
    """Registering creates the organization and its admin, signs them in and audits it."""
    response = client.post("/register", data=REGISTRATION)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"

    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert "Acme Trading" in dashboard.text
    [(org_id, user_id)] = services.login_candidates("hala@acme.example")
    with organization_context(org_id):
        user = db.session.get(User, user_id)
        assert (user.role, user.full_name, user.organization.name) == (
            "admin", "Hala Admin", "Acme Trading")
        assert user.organization.default_language == "en"
    assert audit_actions(user.organization) == ["organization.registered"]


def test_registering_records_the_login(client):
    """The new admin is signed in, so the team page shows when, not «never logged in»."""
    client.post("/register", data={**REGISTRATION, "language": "ar"})
    page = client.get("/team")
    assert page.status_code == 200
    assert arabic("Never") not in page.text
    [(org_id, user_id)] = services.login_candidates("hala@acme.example")
    with organization_context(org_id):
        assert db.session.get(User, user_id).last_login_at is not None


def test_register_with_bad_input_creates_nothing(client):
    """Missing and invalid fields answer 422 with an error beside each; nothing is created."""
    data = {**REGISTRATION, "organization_name": " ", "email": "not-an-email", "password": "short"}
    response = client.post("/register", data=data)
    assert response.status_code == 422
    assert 'id="error-organization_name"' in response.text
    assert 'id="error-email"' in response.text
    assert 'id="error-password"' in response.text
    assert 'value="Hala Admin"' in response.text  # what was typed stays
    assert services.login_candidates("hala@acme.example") == []
    assert client.get("/").status_code == 302


def test_a_script_typed_as_a_name_is_shown_as_text(client):
    """User content is escaped: a <script> full name never reaches the page as markup."""
    client.post("/register", data={**REGISTRATION, "full_name": "<script>alert(1)</script>"})
    page = client.get("/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page


def test_login_signs_in_and_audits(client, org):
    """The right email and password sign in, go to the dashboard and are audited."""
    response = log_in(client, org.admin.email)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert audit_actions(org)[-1] == "user.login"


def test_login_with_a_wrong_password_is_refused_and_audited(client, org):
    """A wrong password re-renders the form with 422 and records user.login_failed."""
    response = log_in(client, org.admin.email, "wrong password")
    assert response.status_code == 422
    assert arabic("The email or password is incorrect.") in response.text
    assert 'dir="ltr"' in response.text
    assert client.get("/").status_code == 302
    assert audit_actions(org)[-1] == "user.login_failed"


def test_login_is_rate_limited_per_account(app, client, org, monkeypatch):
    """After too many failures for one account, even the right password answers 429."""
    monkeypatch.setitem(app.config, "RATELIMIT_LOGIN_PER_ACCOUNT", "2 per minute")
    email = org.admin.email
    assert log_in(client, email, "wrong password").status_code == 422
    assert log_in(client, email, "wrong again!").status_code == 422
    assert log_in(client, email).status_code == 429
    assert client.get("/").status_code == 302


def test_login_asks_for_the_workspace_when_the_email_is_in_several(client, org, other_org):
    """One email in two organizations: the form asks which workspace, then signs into it."""
    email = "shared@both.example"
    make_user(org, "agent", email=email)
    slug, name = other_org.slug, other_org.name
    make_user(other_org, "agent", email=email)
    response = log_in(client, email)
    assert response.status_code == 422
    assert 'name="organization_slug"' in response.text
    response = log_in(client, email, organization_slug=slug)
    assert response.status_code == 303
    assert name in client.get("/").text


def test_login_renews_the_session(client, org):
    """Logging in starts a fresh session: what the old one held is dropped, and each login
    gets a session id of its own."""
    email = org.admin.email
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    before = client.get_cookie("session").value
    log_in(client, email)
    with client.session_transaction() as session:
        assert "planted" not in session
        first = session["_user_id"]
    assert client.get_cookie("session").value != before
    client.post("/logout")
    log_in(client, email)
    with client.session_transaction() as session:
        assert session["_user_id"] != first


@pytest.mark.parametrize("target", ["//evil.example/steal", "/\\evil.example", "/\t/evil.example",
                                    "https://evil.example/", "javascript:alert(1)"])
def test_login_follows_only_safe_next_addresses(client, org, target):
    """`next` may name a page of this site, never another site."""
    email = org.admin.email
    assert log_in(client, email, next="/profile?tab=1").headers["Location"] == "/profile?tab=1"
    client.post("/logout")
    assert log_in(client, email, next=target).headers["Location"] == "/"


def test_a_signed_in_person_skips_login_and_register(client, org):
    """Login and register send someone already signed in to the dashboard."""
    login(client, org.admin)
    for path in ("/login", "/register"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["Location"] == "/"


def test_logout_ends_this_session_only(app, client, org):
    """After logout the old session cookie no longer opens anything; the user's other
    browsers and API tokens stay signed in."""
    other_browser = app.test_client()
    log_in(other_browser, org.admin.email)
    token = bearer(org.admin)
    log_in(client, org.admin.email)
    old_cookie = client.get_cookie("session").value
    response = client.post("/logout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302

    replay = app.test_client()
    replay.set_cookie("session", old_cookie)
    assert replay.get("/").status_code == 302
    assert other_browser.get("/").status_code == 200
    assert client.get("/api/users/me", headers=token).status_code == 200
    assert audit_actions(org)[-1] == "user.logout"


def test_pages_need_a_login(client):
    """An anonymous visitor is sent to the login page, which remembers where they were going."""
    response = client.get("/team")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/team")


def test_the_profile_language_sets_the_page_direction(client, org):
    """Choosing English in the profile turns the pages to lang=en, dir=ltr."""
    login(client, org.admin)
    assert '<html lang="ar" dir="rtl">' in client.get("/profile").text
    response = client.post("/profile", data={"full_name": "New Name",
                                              "preferred_language": "en"})
    assert response.status_code == 303
    page = client.get("/profile").text
    assert '<html lang="en" dir="ltr">' in page
    assert 'value="New Name"' in page


def test_profile_with_bad_input_changes_nothing(client, org):
    """An empty name answers 422 beside the field and keeps the old name."""
    login(client, org.admin)
    response = client.post("/profile", data={"full_name": "", "preferred_language": "en"})
    assert response.status_code == 422
    assert 'id="error-full_name"' in response.text
    assert reload(org, User, org.admin).full_name.startswith("Admin ")


def test_the_header_switcher_saves_a_signed_in_choice(client, org):
    """The language switcher saves the choice of a signed-in user and goes back."""
    login(client, org.admin)
    response = client.post("/language", data={"language": "en", "next": "/team"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/team"
    assert '<html lang="en" dir="ltr">' in client.get("/").text


def test_an_anonymous_language_choice_is_kept_in_a_cookie(client):
    """Before login, the language switcher stores the choice in a cookie."""
    assert '<html lang="ar" dir="rtl">' in client.get("/login").text
    response = client.post("/language", data={"language": "en", "next": "/login"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    assert client.get_cookie("lang").value == "en"
    page = client.get("/login").text
    assert '<html lang="en" dir="ltr">' in page
    assert "Log in" in page


def test_an_unknown_language_is_refused(client):
    """A language other than Arabic or English answers 400 and sets no cookie."""
    assert client.post("/language", data={"language": "xx"}).status_code == 400
    assert client.get_cookie("lang") is None


def test_an_expired_session_sends_htmx_to_the_login_page(client):
    """A boosted click without a session asks htmx for a full redirect, not a swap."""
    response = client.get("/team", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=")
