"""The team page: members, roles, removal, invitations and accepting them."""

from __future__ import annotations

from datetime import timedelta

from flask_babel import force_locale, gettext
from sqlalchemy import select, update

from crm.extensions import db
from crm.foundation.models import Invitation, User
from crm.i18n import isolate
from crm.models import utcnow
from crm.tenancy import organization_context
from tests.factories import PASSWORD, bearer, login, make_user, run_jobs
from tests.foundation import (
    HTMX,
    arabic,
    audit_actions,
    emails_to,
    ident,
    link_in,
    reload,
)
from tests.queries import count_queries

INVITEE = "new.person@invited.example"


def _invite(app, client, email: str = INVITEE, role: str = "agent", language: str = "ar"):
    response = client.post("/team/invitations",
                           data={"email": email, "role": role, "language": language})
    run_jobs(app)
    return response


def _invitation(org, email: str = INVITEE) -> Invitation:
    with organization_context(ident(org)):
        return db.session.scalars(select(Invitation).where(Invitation.email == email)
                                  .order_by(Invitation.id.desc())).first()


def test_the_team_page_lists_the_organization_only(client, org, other_org):
    """Admins see every active member with role and last login; no one of other organizations."""
    agent = make_user(org, "agent")
    stranger = make_user(other_org, "admin")
    names = agent.full_name, agent.email, stranger.email
    admin_id, agent_id = ident(org.admin), ident(agent)
    login(client, org.admin)
    page = client.get("/team")
    assert page.status_code == 200
    assert names[0] in page.text
    assert names[1] in page.text
    assert names[2] not in page.text
    assert arabic("Never") in page.text  # the agent has not logged in yet
    assert f'action="/team/{agent_id}/remove"' in page.text
    assert f'action="/team/{admin_id}/remove"' not in page.text  # not oneself
    confirmation = arabic("Remove %(name)s from the team? They will be signed out at once; "
                          "their conversations and tickets go back to the unassigned ones, "
                          "their open tasks to you.", name=isolate(names[0]))
    assert f'hx-confirm="{confirmation}"' in page.text


def test_more_members_load_from_the_cursor(client, org):
    """htmx asks for the rows after a cursor and gets those rows only."""
    agent = make_user(org, "agent")
    admin_email, agent_email = org.admin.email, agent.email
    login(client, org.admin)
    rows = client.get(f"/team?cursor={ident(org.admin)}", headers=HTMX)
    assert rows.status_code == 200
    assert "<html" not in rows.text
    assert agent_email in rows.text
    assert admin_email not in rows.text


def test_an_agent_and_a_member_cannot_open_the_team(client, org):
    """Agents and members have users:none, so the team page answers 403."""
    for role in ("agent", "member"):
        login(client, make_user(org, role))
        assert client.get("/team").status_code == 403


def test_a_manager_sees_the_team_but_cannot_change_it(client, org):
    """Managers read the team without the controls, and their writes answer 403."""
    manager = make_user(org, "manager")
    admin_id = ident(org.admin)
    login(client, manager)
    page = client.get("/team")
    assert page.status_code == 200
    assert 'name="role"' not in page.text
    assert client.post(f"/team/{admin_id}/role", data={"role": "agent"}).status_code == 403
    assert client.post("/team/invitations", data={"email": INVITEE,
                                                  "role": "agent"}).status_code == 403
    assert reload(org, User, org.admin).role == "admin"


def test_an_admin_changes_a_role(client, org):
    """A role change is saved, audited, and htmx gets the row back."""
    agent = make_user(org, "agent")
    login(client, org.admin)
    response = client.post(f"/team/{ident(agent)}/role", data={"role": "manager"})
    assert response.status_code == 303
    assert reload(org, User, agent).role == "manager"
    assert audit_actions(org)[-1] == "user.role_changed"

    row = client.post(f"/team/{ident(agent)}/role", data={"role": "member"}, headers=HTMX)
    assert row.status_code == 200
    assert row.text.lstrip().startswith(f'<tr id="member-{ident(agent)}"')
    assert 'hx-swap-oob="true"' in row.text  # the flash area, updated out of band
    assert reload(org, User, agent).role == "member"


def test_a_role_change_signs_the_user_out_of_their_sessions(app, client, org):
    """The user whose role changed starts again with the new rights: their browser sessions
    and API tokens end (their open pages are disconnected by the same change)."""
    manager = make_user(org, "manager")
    browser = app.test_client()
    login(browser, manager)
    token = bearer(manager)
    login(client, org.admin)
    assert client.post(f"/team/{ident(manager)}/role", data={"role": "agent"}).status_code == 303
    assert browser.get("/").status_code == 302
    assert client.get("/api/users/me", headers=token).status_code == 401


def test_an_admin_who_changes_their_own_role_stays_signed_in_here(app, client, org):
    """Demoting oneself (another admin remains) keeps this browser signed in with the new
    role; one's other sessions end."""
    make_user(org, "admin")
    elsewhere = app.test_client()
    login(elsewhere, org.admin)
    login(client, org.admin)
    response = client.post(f"/team/{ident(org.admin)}/role", data={"role": "manager"})
    assert response.status_code == 303
    assert client.get("/team").status_code == 200
    assert client.post("/team/invitations", data={"email": INVITEE,
                                                  "role": "agent"}).status_code == 403
    assert elsewhere.get("/").status_code == 302


def test_the_last_admin_cannot_be_demoted(client, org):
    """Demoting the only admin answers 409 with the reason, and nothing changes."""
    login(client, org.admin)
    response = client.post(f"/team/{ident(org.admin)}/role", data={"role": "agent"})
    assert response.status_code == 409
    assert arabic("The organization needs at least one admin.") in response.text
    assert reload(org, User, org.admin).role == "admin"
    row = client.post(f"/team/{ident(org.admin)}/role", data={"role": "agent"}, headers=HTMX)
    assert row.status_code == 409
    assert arabic("The organization needs at least one admin.") in row.text
    assert reload(org, User, org.admin).role == "admin"


def test_an_unknown_role_is_refused(client, org):
    """A role outside the list answers 422 and changes nothing."""
    agent = make_user(org, "agent")
    login(client, org.admin)
    assert client.post(f"/team/{ident(agent)}/role", data={"role": "owner"}).status_code == 422
    assert reload(org, User, agent).role == "agent"


def test_another_organizations_user_is_not_found(client, org, other_org):
    """Changing or removing someone of another organization answers 404; nothing changes."""
    stranger = make_user(other_org, "agent")
    login(client, org.admin)
    assert client.post(f"/team/{ident(stranger)}/role", data={"role": "admin"}).status_code == 404
    assert client.post(f"/team/{ident(stranger)}/remove").status_code == 404
    found = reload(other_org, User, stranger)
    assert (found.role, found.is_active) == ("agent", True)


def test_removing_a_user_ends_their_session_at_once(app, client, org):
    """A removed member's open session stops working on their very next request."""
    agent = make_user(org, "agent")
    agent_browser = app.test_client()
    login(agent_browser, agent)
    assert agent_browser.get("/").status_code == 200
    login(client, org.admin)
    response = client.post(f"/team/{ident(agent)}/remove")
    assert response.status_code == 303
    after = agent_browser.get("/")
    assert after.status_code == 302
    assert after.headers["Location"].startswith("/login")
    assert reload(org, User, agent).is_active is False
    assert audit_actions(org)[-1] == "user.removed"
    assert f'id="member-{ident(agent)}"' not in client.get("/team").text


def test_removal_through_htmx_drops_the_row(client, org):
    """htmx gets an empty answer for the row (it disappears) and the flash out of band."""
    agent = make_user(org, "agent")
    agent_name = agent.full_name
    login(client, org.admin)
    response = client.post(f"/team/{ident(agent)}/remove", headers=HTMX)
    assert response.status_code == 200
    assert "<tr" not in response.text
    assert arabic("%(name)s was removed from the team.",
                  name=isolate(agent_name)) in response.text


def test_an_admin_cannot_remove_themself(client, org):
    """The team page does not let an admin remove their own account."""
    login(client, org.admin)
    response = client.post(f"/team/{ident(org.admin)}/remove")
    assert response.status_code == 409
    assert reload(org, User, org.admin).is_active is True


def test_an_invitation_is_emailed_in_the_invitees_language(app, client, org):
    """Inviting queues an email in the language chosen for the invitee, with the link."""
    login(client, org.admin)
    response = _invite(app, client, language="ar")
    assert response.status_code == 303
    [email] = emails_to(org, INVITEE)
    assert email.status == "sent"
    assert '<html lang="ar" dir="rtl">' in email.body_html
    with force_locale("ar"):
        org_name = reload(org, type(org), org).name
        admin_name = reload(org, User, org.admin).full_name
        expected = gettext("%(name)s invited you to %(organization)s on Wasl",
                           name=admin_name, organization=org_name)
    assert email.subject == expected
    assert link_in(email).startswith("/invitations/accept/")
    assert "invitation.sent" in audit_actions(org)

    _invite(app, client, email="english@invited.example", language="en")
    [english] = emails_to(org, "english@invited.example")
    assert '<html lang="en" dir="ltr">' in english.body_html
    assert english.subject == f"{admin_name} invited you to {org_name} on Wasl"


def test_bad_invitations_are_refused(client, org):
    """A bad email answers 422 beside the field (htmx gets the section); nothing is sent."""
    member_email = org.admin.email
    login(client, org.admin)
    response = client.post("/team/invitations", data={"email": "nope", "role": "agent"})
    assert response.status_code == 422
    assert 'id="error-email"' in response.text
    fragment = client.post("/team/invitations", data={"email": "nope", "role": "agent"},
                           headers=HTMX)
    assert fragment.status_code == 422
    assert fragment.text.lstrip().startswith("<section id=\"invitations\"")
    existing = client.post("/team/invitations", data={"email": member_email, "role": "agent"})
    assert existing.status_code == 409
    assert arabic("This person is already a member of the team.") in existing.text
    assert _invitation(org, "nope") is None
    assert emails_to(org, member_email) == []


def test_accepting_an_invitation_creates_the_member(app, client, org):
    """The emailed link shows the organization and email, then creates the user with the role."""
    org_name = org.name
    login(client, org.admin)
    _invite(app, client, role="manager")
    link = link_in(emails_to(org, INVITEE)[0])

    invitee = app.test_client()
    page = invitee.get(link)
    assert page.status_code == 200
    assert org_name in page.text
    assert INVITEE in page.text
    short = invitee.post(link, data={"full_name": "New Person", "password": "short"})
    assert short.status_code == 422
    assert 'id="error-password"' in short.text

    response = invitee.post(link, data={"full_name": "New Person", "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert invitee.get("/").status_code == 200
    with organization_context(ident(org)):
        user = db.session.scalars(select(User).where(User.email == INVITEE)).one()
        assert (user.full_name, user.role, user.is_active) == ("New Person", "manager", True)
    assert invitee.get(link).status_code == 400  # single use


def test_accepting_an_invitation_records_the_login(app, client, org):
    """The new member is signed in by accepting, so the team page shows when, not «never»."""
    login(client, org.admin)
    _invite(app, client)
    link = link_in(emails_to(org, INVITEE)[0])
    app.test_client().post(link, data={"full_name": "New Person", "password": PASSWORD})
    with organization_context(ident(org)):
        user = db.session.scalars(select(User).where(User.email == INVITEE)).one()
        assert user.last_login_at is not None
        row = client.get("/team").text.split(f'id="member-{user.id}"')[1].split("</tr>")[0]
    assert arabic("Never") not in row


def test_resending_replaces_the_link(app, client, org):
    """Resend emails a new link; the old one stops working."""
    login(client, org.admin)
    _invite(app, client)
    old_link = link_in(emails_to(org, INVITEE)[0])
    response = client.post(f"/team/invitations/{ident(_invitation(org))}/resend")
    assert response.status_code == 303
    run_jobs(app)
    new_email, _old = emails_to(org, INVITEE)
    new_link = link_in(new_email)
    assert new_link != old_link
    assert client.get(old_link).status_code == 400
    assert client.get(new_link).status_code == 200


def test_revoking_makes_the_link_invalid(app, client, org):
    """A revoked invitation's link shows a clear page; htmx gets the updated section."""
    login(client, org.admin)
    _invite(app, client)
    link = link_in(emails_to(org, INVITEE)[0])
    response = client.post(f"/team/invitations/{ident(_invitation(org))}/revoke", headers=HTMX)
    assert response.status_code == 200
    assert 'id="invitations"' in response.text
    assert INVITEE not in response.text.split('id="invitations"')[1].split("</section>")[0]
    page = client.get(link)
    assert page.status_code == 400
    assert arabic("This invitation is invalid or has expired.") in page.text
    assert audit_actions(org)[-1] == "invitation.revoked"


def test_an_expired_invitation_is_refused(app, client, org):
    """An invitation past its expiry cannot be opened or accepted."""
    login(client, org.admin)
    _invite(app, client)
    link = link_in(emails_to(org, INVITEE)[0])
    with organization_context(ident(org)):
        db.session.execute(update(Invitation).values(expires_at=utcnow() - timedelta(days=1)))
    assert client.get(link).status_code == 400
    assert client.post(link, data={"full_name": "Late", "password": PASSWORD}).status_code == 400
    assert arabic("Expired") in client.get("/team").text


def test_invitations_of_another_organization_are_not_found(app, client, org, other_org):
    """Resending or revoking another organization's invitation answers 404."""
    other_admin = app.test_client()
    login(other_admin, other_org.admin)
    login(client, org.admin)
    _invite(app, other_admin)
    invitation_id = ident(_invitation(other_org))
    assert client.post(f"/team/invitations/{invitation_id}/resend").status_code == 404
    assert client.post(f"/team/invitations/{invitation_id}/revoke").status_code == 404
    assert _invitation(other_org).revoked_at is None


def test_the_team_page_runs_a_fixed_number_of_queries(client, org):
    """The user, the members and the invitations: three queries however big the team."""
    for _ in range(12):
        make_user(org, "agent")
    login(client, org.admin)
    for n in range(5):
        client.post("/team/invitations", data={"email": f"p{n}@invited.example",
                                               "role": "member"})
    with count_queries() as statements:
        page = client.get("/team")
    assert page.text.count('<tr id="member-') == 13
    # the user (with the enabled modules, for the sidebar), the members, the invitations
    assert len(statements) == 3, statements


def test_a_boosted_request_gets_the_whole_page(client, org):
    """hx-boost navigation sends HX-Request too, but it needs the full page, not a fragment."""
    login(client, org.admin)
    page = client.get("/team", headers={**HTMX, "HX-Boosted": "true"})
    assert page.text.startswith("<!doctype html>")


def test_the_team_page_says_what_each_role_may_do(client, org):
    """Each role's areas, read from the permission matrix: what it works on, what it only
    reads, among the modules the app has."""
    login(client, org.admin)
    page = client.get("/team").text
    roles = page.split('id="roles-title"')[1].split("</section>")[0]
    manager = roles.split(arabic("Manager"))[1].split("</dd>")[0]
    assert arabic("Works on %(areas)s.",
                  areas="العملاء ومسار المبيعات، التذاكر، محادثات واتساب، الحملات") in manager
    assert arabic("Reads %(areas)s, without changing them.",
                  areas="الفريق، الفوترة، الإعدادات") in manager
    agent = roles.split(arabic("Agent"))[1].split("</dd>")[0]
    assert arabic("Agents answer the conversations assigned to them; their dashboard counts "
                  "their own work.") in agent


def test_changing_ones_own_role_asks_first(client, org):
    """An admin's own role form asks before it runs (a slip takes away what they need to undo
    it); other members' forms do not."""
    agent = make_user(org, "agent")
    admin_id, agent_id = ident(org.admin), ident(agent)
    login(client, org.admin)
    page = client.get("/team").text
    own = page.split(f'id="member-{admin_id}"')[1].split("</tr>")[0]
    other = page.split(f'id="member-{agent_id}"')[1].split("</tr>")[0]
    question = arabic("Change your own role? You may not be able to change it back.")
    assert f'hx-confirm="{question}"' in own
    assert "hx-confirm" not in other.split("/remove")[0]
