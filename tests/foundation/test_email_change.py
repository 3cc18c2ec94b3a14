"""A member changes their email address: asked with the password, confirmed by a link sent to
the new address, the old one told; the services, the profile page and the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from crm.errors import ConflictError, ValidationError
from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import (
    AuditEntry,
    EmailChange,
    Organization,
    OutboundEmail,
    PasswordResetToken,
    User,
    UserSession,
)
from crm.models import utcnow
from crm.tenancy import organization_context, set_current_organization
from tests.factories import PASSWORD, bearer, login, make_session, make_user, run_jobs
from tests.foundation import arabic, emails_to, ident, link_in, log_in, reload

NEW = "new.address@example.com"


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """Every email the foundation sends during the test (and sends it): its address, template,
    language and one-time token."""
    seen: list[dict] = []
    real = services.send_email

    def record(to, template, language, link=None, token=None, **context):
        seen.append({"to": to, "template": template, "language": language, "token": token})
        return real(to, template, language, link=link, token=token, **context)

    monkeypatch.setattr(services, "send_email", record)
    return seen


def _token(sent: list[dict]) -> str:
    [token] = [mail["token"] for mail in sent if mail["template"] == "email_change_confirm"][-1:]
    return token


def _actions(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# -- services ---------------------------------------------------------------------------------

def test_a_change_waits_for_the_link_sent_to_the_new_address(acting, sent):
    """Asking sends a link to the new address and a notice to the old one, each in the
    member's language; the member still signs in with the old address until the link."""
    member = make_user(acting, language="en")
    old = member.email
    change = services.request_email_change(member, "  New.Address@Example.com ", PASSWORD)
    assert change.new_email == NEW
    assert services.pending_email_change(member) == change
    assert member.email == old
    assert [(m["to"], m["template"], m["language"]) for m in sent] == [
        (NEW, "email_change_confirm", "en"), (old, "email_change_notice", "en")]
    assert sent[0]["token"]
    assert sent[1]["token"] is None
    assert change.expires_at - utcnow() > timedelta(hours=23)
    [entry] = _actions("user.email_change_requested")
    assert entry.details == {"old_email": old, "new_email": NEW}


def test_the_mails_follow_the_members_language(acting, sent):
    """A member without a language of their own gets the organization's (Arabic)."""
    member = make_user(acting)
    services.request_email_change(member, NEW, PASSWORD)
    assert {m["language"] for m in sent} == {"ar"}
    subjects = set(db.session.scalars(select(OutboundEmail.subject)))
    assert subjects == {arabic("Confirm your new Wasl email address"),
                        arabic("A change of your Wasl email address was asked for")}


@pytest.mark.parametrize(("new_email", "password", "fields"), [
    (NEW, "not the password", {"current_password"}),
    ("not an address", PASSWORD, {"new_email"}),
    ("", "", {"new_email", "current_password"}),
    (None, None, {"new_email", "current_password"}),
])
def test_a_wrong_password_or_address_changes_nothing(acting, sent, new_email, password,
                                                     fields):
    """Each mistake is said on its field, all of them at once; nothing is written or sent."""
    member = make_user(acting)
    with pytest.raises(ValidationError) as caught:
        services.request_email_change(member, new_email, password)
    assert set(caught.value.fields) == fields
    assert sent == []
    assert services.pending_email_change(member) is None


def test_the_same_address_is_refused(acting, sent):
    member = make_user(acting)
    with pytest.raises(ValidationError) as caught:
        services.request_email_change(member, member.email.upper(), PASSWORD)
    assert caught.value.fields == {"new_email": arabic("This is already your email address.")}
    assert sent == []


def test_an_address_of_another_account_is_refused(acting, sent):
    """A colleague's address is refused, a removed colleague's too (they can be invited back)."""
    member, colleague = make_user(acting), make_user(acting)
    services.remove_user(acting.admin, colleague)
    for address in (acting.admin.email, colleague.email):
        with pytest.raises(ValidationError) as caught:
            services.request_email_change(member, address, PASSWORD)
        assert caught.value.fields == {
            "new_email": arabic("Another account already uses this address.")}
    assert sent == []


def test_confirming_applies_the_change_once_and_audits_it(acting, sent):
    """The link changes the address, audits who, from and to, and works once."""
    member = make_user(acting)
    old = member.email
    services.request_email_change(member, NEW, PASSWORD)
    token = _token(sent)
    assert services.confirm_email_change(token) == member
    assert member.email == NEW
    assert services.pending_email_change(member) is None
    [entry] = _actions("user.email_changed")
    assert (entry.actor_id, entry.target_id, entry.details) == (
        member.id, member.id, {"old_email": old, "new_email": NEW})
    with pytest.raises(ValidationError) as caught:
        services.confirm_email_change(token)
    assert caught.value.fields == {
        "token": arabic("This confirmation link is invalid or has expired.")}


def test_confirming_ends_the_other_sessions_but_the_members_own(acting, sent):
    """As a password change does: every other browser session and API token ends; the
    browser the member opened the link in, signed in as them, stays; API keys stay."""
    member = make_user(acting, role="admin")
    here, elsewhere = make_session(member), make_session(member)
    key = services.create_api_key(acting.admin, "Integration", member.id)
    member.current_session = here
    services.request_email_change(member, NEW, PASSWORD)
    services.confirm_email_change(_token(sent), member)
    ended = {s.id: s.ended_at is not None for s in db.session.scalars(select(UserSession))
             if s.user_id == member.id}
    assert ended == {here.id: False, elsewhere.id: True, key.id: False}


def test_confirming_signed_out_ends_every_session(acting, sent):
    member = make_user(acting)
    session = make_session(member)
    services.request_email_change(member, NEW, PASSWORD)
    services.confirm_email_change(_token(sent), None)
    db.session.refresh(session)
    assert session.ended_at is not None


def test_confirming_stops_reset_links_sent_to_the_old_address(acting, sent):
    member = make_user(acting)
    services.request_password_reset(member.email)  # as the visitor it serves, of no org
    set_current_organization(acting.id)
    services.request_email_change(member, NEW, PASSWORD)
    services.confirm_email_change(_token(sent))
    reset = db.session.scalar(select(PasswordResetToken))
    assert reset.used_at is not None


@pytest.mark.parametrize("spoil", ["expired", "cancelled", "tampered", "replaced"])
def test_a_dead_link_changes_nothing(acting, sent, spoil):
    """An expired, cancelled, tampered or replaced (sent again) link is refused."""
    member = make_user(acting)
    old = member.email
    services.request_email_change(member, NEW, PASSWORD)
    token = _token(sent)
    if spoil == "expired":
        db.session.execute(update(EmailChange).values(expires_at=utcnow() - timedelta(1)))
    elif spoil == "cancelled":
        services.cancel_email_change(member)
    elif spoil == "tampered":
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    else:
        services.resend_email_change(member)
    with pytest.raises(ValidationError):
        services.confirm_email_change(token)
    with organization_context(acting.id):
        db.session.expire_all()
        assert db.session.get(User, member.id).email == old
        assert _actions("user.email_changed") == []


def test_the_address_taken_meanwhile_is_refused_at_confirmation(acting, sent):
    """Someone else took the address after the request: the link refuses, nothing changes."""
    member = make_user(acting)
    old = member.email
    services.request_email_change(member, NEW, PASSWORD)
    make_user(acting, email=NEW)
    with pytest.raises(ConflictError) as caught:
        services.confirm_email_change(_token(sent))
    assert NEW in caught.value.message
    assert member.email == old


def test_a_new_request_replaces_the_waiting_one(acting, sent):
    member = make_user(acting)
    services.request_email_change(member, "first@example.com", PASSWORD)
    first = _token(sent)
    services.request_email_change(member, NEW, PASSWORD)
    assert services.pending_email_change(member).new_email == NEW
    with pytest.raises(ValidationError):
        services.confirm_email_change(first)


def test_resend_sends_a_new_link_and_cancel_ends_it(acting, sent):
    member = make_user(acting)
    services.request_email_change(member, NEW, PASSWORD)
    change = services.resend_email_change(member)
    assert [m["to"] for m in sent] == [NEW, member.email, NEW]
    assert sent[0]["token"] != sent[2]["token"]
    assert change.expires_at - utcnow() > timedelta(hours=23)
    services.cancel_email_change(member)
    assert services.pending_email_change(member) is None
    with pytest.raises(ConflictError):
        services.resend_email_change(member)
    with pytest.raises(ConflictError):
        services.cancel_email_change(member)
    assert [e.action for e in db.session.scalars(select(AuditEntry).where(
        AuditEntry.action.like("user.email_change%")).order_by(AuditEntry.id))] == [
        "user.email_change_requested", "user.email_change_resent",
        "user.email_change_cancelled"]


def test_a_link_of_a_removed_member_is_refused(acting, sent):
    member = make_user(acting)
    services.request_email_change(member, NEW, PASSWORD)
    services.remove_user(acting.admin, member)
    with pytest.raises(ValidationError):
        services.confirm_email_change(_token(sent))


# -- the profile page ------------------------------------------------------------------------

def test_change_the_address_from_the_profile(app, client, org):
    """The profile asks, says the change waits (with resend and cancel), the old address
    still logs in; the link from the delivered email changes it and logs in the new way."""
    member = make_user(org, role="agent")
    old = member.email
    other_browser = app.test_client()
    login(other_browser, member)
    assert log_in(client, old).status_code == 303
    page = client.get("/profile").text
    assert 'action="/profile/email"' in page
    assert 'aria-describedby="help-email-current_password"' in page

    asked = client.post("/profile/email", data={"new_email": NEW, "current_password": PASSWORD})
    assert (asked.status_code, asked.headers["Location"]) == (303, "/profile#email")
    page = client.get("/profile").text
    assert NEW in page
    assert 'action="/profile/email/resend"' in page
    assert 'action="/profile/email/cancel"' in page
    assert 'action="/profile/email"' not in page

    run_jobs(app)
    [notice] = emails_to(org, old)
    assert "/confirm-email/" not in notice.body_text
    [confirmation] = emails_to(org, NEW)
    link = link_in(confirmation)
    assert link.startswith("/confirm-email/")

    done = client.get(link)
    assert done.status_code == 200
    assert arabic("Your email address was changed") in done.text
    assert 'href="/profile"' in done.text
    assert client.get("/profile").status_code == 200  # this browser stays signed in
    assert other_browser.get("/profile").status_code == 302
    assert client.get(link).status_code == 400
    client.post("/logout")
    assert log_in(client, old).status_code == 422
    assert log_in(client, NEW).status_code == 303
    assert reload(org, User, member).email == NEW


def test_the_profile_form_says_every_mistake_and_keeps_the_address(client, org):
    login(client, org.admin)
    response = client.post("/profile/email", data={"new_email": "not an address",
                                                   "current_password": "wrong"})
    assert response.status_code == 422
    assert 'id="error-email-new_email"' in response.text
    assert 'id="error-email-current_password"' in response.text
    assert arabic("Enter a valid email address.") in response.text
    assert arabic("The current password is incorrect.") in response.text
    assert 'value="not an address"' in response.text
    # The password form's fields keep their own ids.
    assert response.text.count('id="field-current_password"') == 1


def test_cancel_and_resend_from_the_profile(app, client, org):
    login(client, org.admin)
    client.post("/profile/email", data={"new_email": NEW, "current_password": PASSWORD})
    assert client.post("/profile/email/resend").status_code == 303
    assert arabic("We sent the link again. The earlier one no longer works.") in client.get(
        "/profile").text
    assert client.post("/profile/email/cancel").status_code == 303
    page = client.get("/profile").text
    assert arabic("The change of email address was cancelled.") in page
    assert 'action="/profile/email"' in page
    client.post("/profile/email/cancel")
    assert arabic("No change of email address is waiting.") in client.get("/profile").text


def test_a_dead_or_taken_link_shows_a_clear_page(app, client, org):
    """Signed out, a made-up link and a link whose address was taken meanwhile each answer a
    page that says so; the address stays."""
    member = make_user(org)
    login(client, member)
    client.post("/profile/email", data={"new_email": NEW, "current_password": PASSWORD})
    client.post("/logout")
    run_jobs(app)
    link = link_in(emails_to(org, NEW)[0])
    make_user(reload(org, Organization, org), email=NEW)
    taken = client.get(link)
    assert taken.status_code == 409
    assert arabic("Another account now uses %(email)s: the address was not changed.",
                  email=NEW) in taken.text
    assert reload(org, User, member).email != NEW
    made_up = client.get("/confirm-email/1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert made_up.status_code == 400
    assert arabic("This confirmation link is invalid or has expired.") in made_up.text


def test_the_audit_log_shows_the_change(app, client, org, sent):
    with organization_context(ident(org)):
        services.request_email_change(org.admin, NEW, PASSWORD)
        services.confirm_email_change(_token(sent))
    login(client, org.admin)
    page = client.get("/settings/audit").text
    assert arabic("Email address changed") in page
    assert NEW in page


# -- the API ----------------------------------------------------------------------------------

def test_change_the_address_through_the_api(app, client, org, sent):
    """Ask, read, send again, and confirm with the token (public, like a password reset)."""
    member = make_user(org)
    headers = bearer(member)
    assert client.get("/api/users/me/email-change", headers=headers).status_code == 404
    wrong = client.post("/api/users/me/email-change", headers=headers,
                        json={"new_email": NEW, "current_password": "wrong"})
    assert wrong.status_code == 422
    assert set(wrong.json["error"]["fields"]) == {"current_password"}

    asked = client.post("/api/users/me/email-change", headers=headers,
                        json={"new_email": NEW, "current_password": PASSWORD})
    assert asked.status_code == 202
    assert asked.json["new_email"] == NEW
    assert client.get("/api/users/me/email-change", headers=headers).json["new_email"] == NEW
    assert client.post("/api/users/me/email-change/link",
                       headers=headers).status_code == 202

    confirmed = client.post("/api/auth/confirm-email", json={"token": _token(sent)})
    assert confirmed.status_code == 200
    assert confirmed.json["email"] == NEW
    assert client.get("/api/users/me", headers=headers).status_code == 401  # its token ended
    again = client.post("/api/auth/confirm-email", json={"token": _token(sent)})
    assert again.status_code == 422


def test_cancel_through_the_api(client, org):
    headers = bearer(org.admin)
    client.post("/api/users/me/email-change", headers=headers,
                json={"new_email": NEW, "current_password": PASSWORD})
    assert client.delete("/api/users/me/email-change", headers=headers).status_code == 204
    assert client.delete("/api/users/me/email-change", headers=headers).status_code == 409
    assert client.post("/api/users/me/email-change/link", headers=headers).status_code == 409


def test_the_routes_are_in_the_openapi_description(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert {"get", "post", "delete"} <= set(paths["/api/users/me/email-change"])
    assert "post" in paths["/api/users/me/email-change/link"]
    assert "post" in paths["/api/auth/confirm-email"]
