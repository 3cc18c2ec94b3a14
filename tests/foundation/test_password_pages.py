"""Forgot password, reset by emailed link, change password."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import update

from crm.extensions import db
from crm.foundation.models import PasswordResetToken
from crm.models import utcnow
from crm.tenancy import organization_context
from tests.factories import PASSWORD, bearer, login, run_jobs
from tests.foundation import arabic, emails_to, ident, link_in, log_in

NEW_PASSWORD = "a brand new password"
FORGOT_MESSAGE = "If an account exists for this email, we sent a link to reset the password."


def _reset_link(app, client, org, email: str) -> str:
    client.post("/forgot-password", data={"email": email})
    run_jobs(app)
    [message] = emails_to(org, email)
    assert message.status == "sent"
    return link_in(message)


def test_forgot_password_answers_the_same_for_unknown_emails(client, org):
    """Known or unknown email, the visitor sees exactly the same answer."""
    known = client.post("/forgot-password", data={"email": org.admin.email})
    unknown = client.post("/forgot-password", data={"email": "nobody@nowhere.example"})
    assert (known.status_code, known.headers["Location"]) == (
        unknown.status_code, unknown.headers["Location"]) == (303, "/forgot-password")
    assert arabic(FORGOT_MESSAGE) in client.get("/forgot-password").text


def test_password_reset_end_to_end(app, client, org):
    """The emailed link sets a new password once; the old password and the link stop working."""
    email = org.admin.email
    link = _reset_link(app, client, org, email)
    form = client.get(link)
    assert form.status_code == 200
    assert 'autocomplete="new-password"' in form.text

    mismatch = client.post(link, data={"password": NEW_PASSWORD,
                                       "password_confirmation": "something else"})
    assert mismatch.status_code == 422
    assert 'id="error-password_confirmation"' in mismatch.text

    done = client.post(link, data={"password": NEW_PASSWORD,
                                   "password_confirmation": NEW_PASSWORD})
    assert done.status_code == 303
    assert done.headers["Location"] == "/login"
    assert log_in(client, email, PASSWORD).status_code == 422
    assert log_in(client, email, NEW_PASSWORD).status_code == 303

    reused = client.get(link)
    assert reused.status_code == 400
    assert arabic("This reset link is invalid or has expired.") in reused.text
    assert client.post(link, data={"password": "yet another one",
                                   "password_confirmation": "yet another one"}).status_code == 400


def test_a_password_reset_ends_every_session(app, client, org):
    """Whoever reset the password (perhaps not the owner of the open sessions), every browser
    session and API token of the account ends."""
    email = org.admin.email
    browser = app.test_client()
    log_in(browser, email)
    token = bearer(org.admin)
    link = _reset_link(app, client, org, email)
    done = client.post(link, data={"password": NEW_PASSWORD,
                                   "password_confirmation": NEW_PASSWORD})
    assert done.status_code == 303
    assert browser.get("/profile").status_code == 302
    assert client.get("/api/users/me", headers=token).status_code == 401


def test_an_expired_reset_link_is_refused(app, client, org):
    """A reset link past its expiry shows a clear message and changes nothing."""
    email = org.admin.email
    link = _reset_link(app, client, org, email)
    with organization_context(ident(org)):
        db.session.execute(update(PasswordResetToken).values(
            expires_at=utcnow() - timedelta(minutes=1)))
    assert client.get(link).status_code == 400
    response = client.post(link, data={"password": NEW_PASSWORD,
                                       "password_confirmation": NEW_PASSWORD})
    assert response.status_code == 400
    assert log_in(client, email, PASSWORD).status_code == 303


def test_a_made_up_reset_link_is_refused(client):
    """A malformed or unknown token answers 400 with the message, not a crash."""
    for token in ("nonsense", "999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"):
        response = client.get(f"/reset-password/{token}")
        assert response.status_code == 400
        assert arabic("This reset link is invalid or has expired.") in response.text


def test_changing_the_password_ends_the_other_sessions(app, client, org):
    """After a password change this browser stays signed in; every other session ends."""
    email = org.admin.email
    other_browser = app.test_client()
    login(other_browser, org.admin)
    token = bearer(org.admin)
    log_in(client, email)
    with client.session_transaction() as session:
        this_session = session["_user_id"]
    response = client.post("/profile/password", data={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "new_password_confirmation": NEW_PASSWORD})
    assert response.status_code == 303
    assert client.get("/profile").status_code == 200
    with client.session_transaction() as session:
        assert session["_user_id"] == this_session  # the same session, not a new login
    assert other_browser.get("/profile").status_code == 302
    assert client.get("/api/users/me", headers=token).status_code == 401
    client.post("/logout")
    assert log_in(client, email, NEW_PASSWORD).status_code == 303


def test_a_wrong_current_password_changes_nothing(app, client, org):
    """A wrong current password or a mismatched repeat answers 422 and keeps every session."""
    email = org.admin.email
    other_browser = app.test_client()
    login(other_browser, org.admin)
    login(client, org.admin)
    wrong = client.post("/profile/password", data={
        "current_password": "not it at all", "new_password": NEW_PASSWORD,
        "new_password_confirmation": NEW_PASSWORD})
    assert wrong.status_code == 422
    assert 'id="error-current_password"' in wrong.text
    mismatch = client.post("/profile/password", data={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "new_password_confirmation": "different"})
    assert mismatch.status_code == 422
    assert 'id="error-new_password_confirmation"' in mismatch.text
    assert other_browser.get("/profile").status_code == 200
    client.post("/logout")
    assert log_in(client, email, PASSWORD).status_code == 303


def test_the_password_form_shows_every_mistake_at_once(client, org):
    """A wrong current password, a short new one and a repeat that differs: the form says all
    three in one answer, not the first alone."""
    login(client, org.admin)
    response = client.post("/profile/password", data={
        "current_password": "not it at all", "new_password": "short",
        "new_password_confirmation": "different"})
    assert response.status_code == 422
    for field in ("current_password", "new_password", "new_password_confirmation"):
        assert f'id="error-{field}"' in response.text, field


def test_the_reset_form_shows_every_mistake_at_once(app, client, org):
    """A short password that the repeat does not match: both fields say so together."""
    link = _reset_link(app, client, org, org.admin.email)
    response = client.post(link, data={"password": "short", "password_confirmation": "other"})
    assert response.status_code == 422
    assert 'id="error-password"' in response.text
    assert 'id="error-password_confirmation"' in response.text


def test_help_texts_are_tied_to_their_fields(client, org):
    """A field's help text is announced with it (aria-describedby names the help's id), and
    so is its error once it has one."""
    login(client, org.admin)
    page = client.get("/profile").text
    assert re.search(r'<input id="field-new_password"[^>]*aria-describedby="help-new_password"',
                     page)
    assert 'id="help-new_password"' in page
    response = client.post("/profile/password", data={
        "current_password": PASSWORD, "new_password": "short",
        "new_password_confirmation": "short"})
    assert re.search(r'<input id="field-new_password"[^>]*'
                     r'aria-describedby="help-new_password error-new_password"', response.text)
