"""Dashboard, organization settings, module switches, audit log and the demo seed."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from flask_babel import force_locale

from crm.campaigns import demo as campaigns_demo  # noqa: F401 - registers its part
from crm.campaigns.labels import CONSENT_ACTION_LABELS
from crm.campaigns.models import Campaign, CampaignRecipient, CampaignResult, OptOut
from crm.customers import demo as customers_demo  # noqa: F401 - registers its part
from crm.customers.models import Customer, CustomerActivity
from crm.extensions import db
from crm.foundation import services
from crm.foundation.demo import DEMO_EMAIL, DEMO_PASSWORD, seed
from crm.foundation.models import Invitation, Organization, User
from crm.foundation.views import AUDIT_ACTIONS, TARGET_LABELS
from crm.tenancy import organization_context
from crm.tickets import demo as tickets_demo  # noqa: F401
from crm.tickets import services as ticket_services
from crm.tickets.models import Ticket, TicketComment
from crm.whatsapp import demo as whatsapp_demo  # noqa: F401
from crm.whatsapp.models import Conversation
from tests.conftest import ROOT
from tests.factories import login, make_user, run_jobs
from tests.foundation import HTMX, arabic, audit_actions, ident, log_in, reload
from tests.queries import count_queries
from tests.tickets.factories import make_ticket

SETTINGS = {"name": "Renamed Co", "default_language": "en", "timezone": "Africa/Cairo",
            "country": "EG"}


def test_a_fresh_dashboard_invites_the_team(client, org):
    """A new organization's dashboard shows its counts and the hint to invite the team."""
    login(client, org.admin)
    page = client.get("/")
    assert page.status_code == 200
    assert arabic("Invite your team") in page.text
    assert '<span class="stat">1</span>' in page.text


def test_the_dashboard_counts_the_team_and_invitations(app, client, org):
    """Members and pending invitations are counted; the checklist's team step is done."""
    make_user(org, "agent")
    make_user(org, "member")
    login(client, org.admin)
    client.post("/team/invitations", data={"email": "x@invited.example", "role": "agent"})
    page = client.get("/").text
    assert 'id="card-team"' in page
    team_card = page.split('id="card-team"')[1].split("</section>")[0]
    invitations_card = page.split('id="card-invitations"')[1].split("</section>")[0]
    assert '<span class="stat">3</span>' in team_card
    assert '<span class="stat">1</span>' in invitations_card
    assert '<li class="done" id="step-team">' in page


def test_an_agent_sees_the_dashboard_without_team_cards(client, org):
    """Agents (users:none) get the dashboard, without the invitations card."""
    login(client, make_user(org, "agent"))
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="card-invitations"' not in page.text


def test_an_admin_updates_the_settings(client, org):
    """Saving settings changes the organization and writes an audit entry."""
    login(client, org.admin)
    page = client.get("/settings")
    assert page.status_code == 200
    assert 'value="Africa/Cairo"' in page.text
    response = client.post("/settings", data=SETTINGS)
    assert response.status_code == 303
    saved = reload(org, Organization, org)
    assert (saved.name, saved.default_language, saved.timezone, saved.country) == (
        "Renamed Co", "en", "Africa/Cairo", "EG")
    assert audit_actions(org)[-1] == "organization.updated"


def test_bad_settings_change_nothing(client, org):
    """An unknown time zone or country answers 422 beside the field; nothing is saved."""
    name = org.name
    login(client, org.admin)
    response = client.post("/settings", data={**SETTINGS, "timezone": "Mars/Olympus",
                                              "country": "ZZ"})
    assert response.status_code == 422
    assert 'id="error-timezone"' in response.text
    assert 'id="error-country"' in response.text
    assert 'value="Mars/Olympus"' in response.text  # what was typed stays
    assert reload(org, Organization, org).name == name


def test_country_names_follow_the_language(client, org):
    """The country list is named in the page's language."""
    login(client, org.admin)
    assert "مصر" in client.get("/settings").text
    client.post("/language", data={"language": "en"})
    assert ">Egypt<" in client.get("/settings").text


def test_module_switches(client, org):
    """Unticked modules are switched off (and audited); ticked ones stay on. Only modules
    the app has are listed."""
    login(client, org.admin)
    response = client.post("/settings/modules", data={"modules": ["crm"]})
    assert response.status_code == 303
    with organization_context(ident(org)):
        assert services.enabled_modules() == frozenset({"crm"})
    assert "settings.module_switched" in audit_actions(org)
    page = client.get("/settings").text
    assert 'value="crm" checked' in page
    for module in ("whatsapp", "ticketing", "campaigns"):
        assert f'value="{module}">' in page


def test_time_zones_are_named_in_the_language_with_their_offset(client, org):
    """The time zone is searched among zones named in the page's language with their offset
    (Arabic, then English); the current one is named under the field."""
    login(client, org.admin)
    page = client.get("/settings").text
    assert 'list="timezone-choices"' in page
    assert ('<option value="Asia/Riyadh" label="توقيت المملكة العربية السعودية (UTC+03:00)">'
            in page)
    assert "الآن: توقيت المملكة العربية السعودية (UTC+03:00)." in page
    client.post("/language", data={"language": "en"})
    assert 'label="Egypt Time (UTC+0' in client.get("/settings").text


def test_the_currency_is_chosen_among_those_in_use(client, org):
    """The currency of amounts: SAR by default, named in the page's language; an unknown
    code is refused beside the field."""
    login(client, org.admin)
    page = client.get("/settings").text
    assert '<option value="SAR" selected>ريال سعودي (SAR)</option>' in page
    assert client.post("/settings", data={**SETTINGS, "currency": "EGP"}).status_code == 303
    assert reload(org, Organization, org).currency == "EGP"
    refused = client.post("/settings", data={**SETTINGS, "currency": "XYZ"})
    assert refused.status_code == 422
    assert 'id="error-currency"' in refused.text
    assert reload(org, Organization, org).currency == "EGP"


def test_a_manager_reads_settings_but_cannot_save(client, org):
    """Managers see the settings read-only; saving and the audit log answer 403."""
    name = org.name
    login(client, make_user(org, "manager"))
    page = client.get("/settings")
    assert page.status_code == 200
    assert "disabled" in page.text
    assert client.post("/settings", data=SETTINGS).status_code == 403
    assert client.post("/settings/modules", data={"modules": []}).status_code == 403
    assert client.get("/settings/audit").status_code == 403
    assert reload(org, Organization, org).name == name


def test_agents_cannot_open_settings_or_the_audit_log(client, org):
    """Agents (settings:none) get 403 on the settings pages."""
    login(client, make_user(org, "agent"))
    assert client.get("/settings").status_code == 403
    assert client.get("/settings/audit").status_code == 403


def test_the_audit_log_shows_readable_entries(client, org):
    """Admins read the audit log, newest first, with readable actions and the IP."""
    email = org.admin.email
    log_in(client, email, "wrong password")
    log_in(client, email)
    page = client.get("/settings/audit")
    assert page.status_code == 200
    text = page.text.split('id="audit-rows"')[1]  # past the filter's choices
    assert (text.index(arabic("Logged in")) < text.index(arabic("Failed login"))
            < text.index(arabic("Workspace created")))
    assert "127.0.0.1" in text
    assert arabic("Load more") not in text


AUDITED = re.compile(r'\baudit\(\s*"([a-z_]+\.[a-z_.]+)"(?:\s+if [^)]*? else\s+"([a-z_.]+)")?')


def test_every_audited_action_and_what_it_acts_on_reads_in_words(app):
    """Each module names its audited actions, and the things they act on, for the audit log
    (the demo's log read «ticket.noted» on «tickets #8»)."""
    actions = {action for path in ROOT.glob("crm/**/*.py")
               for match in AUDITED.finditer(path.read_text()) for action in match.groups()
               if action} | {f"consent.{action}" for action in CONSENT_ACTION_LABELS}
    audited = {model.__tablename__ for model in (Campaign, Conversation, Customer, Ticket)}

    assert "ticket.noted" in actions
    assert sorted(actions - AUDIT_ACTIONS.keys()) == []
    assert sorted(audited - TARGET_LABELS.keys()) == []
    with app.test_request_context(), force_locale("ar"):
        assert str(AUDIT_ACTIONS["ticket.noted"]) != "ticket.noted"


def test_the_audit_log_loads_more_rows(client, org):
    """Past one page, "Load more" fetches the older rows for htmx to append."""
    with organization_context(ident(org)):
        for n in range(55):
            services.audit("user.login", None, None, n=n)
        db.session.flush()
    login(client, org.admin)
    page = client.get("/settings/audit")
    assert len(re.findall(r'<tr id="audit-\d+"', page.text)) == 50
    cursor = page.text.split("/settings/audit?cursor=")[1].split('"')[0]
    more = client.get(f"/settings/audit?cursor={cursor}", headers=HTMX)
    assert more.status_code == 200
    assert "<html" not in more.text
    assert len(re.findall(r'<tr id="audit-\d+"', more.text)) == 6  # 5 logins, the registration
    assert arabic("Workspace created") in more.text


def test_the_audit_log_runs_a_fixed_number_of_queries(client, org):
    """The user (with the modules switched on), the members (the filter's choices and whom
    entries act on), the entries with their actors: three queries however many there are."""
    actors = [make_user(org, "agent") for _ in range(8)]
    with organization_context(ident(org)):
        for actor in actors:
            services.audit("user.login", actor, actor)
        db.session.flush()
    names = [actor.full_name for actor in actors]
    login(client, org.admin)
    with count_queries() as statements:
        page = client.get("/settings/audit")
    assert all(name in page.text for name in names)
    # The enabled modules, for the sidebar, come with the user.
    assert len(statements) == 3, statements


def test_dates_follow_the_organizations_time_zone(client, org):
    """Times are shown in the organization's time zone."""
    login(client, org.admin)
    client.post("/settings", data={**SETTINGS, "timezone": "Pacific/Kiritimati"})
    client.post("/language", data={"language": "en"})
    with organization_context(ident(org)):
        entry_time = services.list_audit()[0][0].created_at
    page = client.get("/settings/audit").text
    pattern = "d MMM y, h:mm\u202fa"  # 2 Dec 2026, 12:05 PM (crm/i18n.py)
    shown = format_datetime(entry_time, pattern, tzinfo=ZoneInfo("Pacific/Kiritimati"),
                            locale="en")
    assert shown in page
    assert format_datetime(entry_time, pattern, tzinfo=ZoneInfo("UTC"), locale="en") not in page


def test_seed_demo_creates_the_demo_organization_once(app):
    """`crm seed-demo` creates the demo team with a pending invitation, 300 customers in
    every stage with activities and scores, in Arabic and English, a sandbox number with
    40 conversations in every state, tickets in several statuses with comments (one breaching
    soon, one breached) on its conversations and customers, and a completed campaign with
    recipients in every final state; it prints the login; a rerun says so."""
    summary = seed()
    assert DEMO_EMAIL in summary
    assert DEMO_PASSWORD in summary
    assert "300 customers" in summary
    assert "8 tickets" in summary
    assert "A completed campaign" in summary
    [(org_id, _user_id)] = services.login_candidates(DEMO_EMAIL)
    with organization_context(org_id):
        roles = sorted(db.session.scalars(db.select(User.role)))
        assert roles == ["admin", "agent", "agent", "manager", "member"]
        [invitation] = db.session.scalars(db.select(Invitation)).all()
        assert invitation.status == "pending"
        assert db.session.get(Organization, org_id).name == "شركة وصل التجريبية"
        customers = db.session.scalars(db.select(Customer)).all()
        assert len(customers) == 300
        assert len({customer.stage_id for customer in customers}) == 6
        assert any(re.search("[a-z]", customer.name) for customer in customers)
        assert sum(1 for customer in customers if re.search("[ء-ي]", customer.name)) > 150
        assert sum(1 for customer in customers if customer.score) > 30
        assert db.session.scalar(db.select(db.func.count()).select_from(CustomerActivity)
                                 .where(CustomerActivity.type == "task")) > 30
        conversations = db.session.scalars(db.select(Conversation)).all()
        assert len(conversations) == 40
        assert {c.status for c in conversations} == {"open", "pending", "resolved"}
        assert any(c.assigned_user_id is None for c in conversations)
        assert any(c.unread_count for c in conversations)
        assert all(c.customer_id for c in conversations)
        # Named as WhatsApp names a contact (their profile name), not a bare number each.
        names = {c.id: c.contact_name for c in conversations}
        assert all(names[c.id] == db.session.get(Customer, c.customer_id).name
                   for c in conversations), names
        tickets = db.session.scalars(db.select(Ticket)).all()
        assert {"open", "pending", "solved"} <= {t.status for t in tickets}
        assert [t.sla_status for t in tickets].count("warning") == 1
        assert [t.sla_status for t in tickets].count("breached") == 1
        assert all(t.customer_id for t in tickets)
        assert sum(1 for t in tickets if t.conversation_id) >= len(tickets) // 2
        assert any(t.assignee_id is None for t in tickets if t.status == "open")
        assert db.session.scalar(db.select(db.func.count()).select_from(TicketComment)) \
            >= len(tickets)
        [campaign] = db.session.scalars(db.select(Campaign)).all()
        assert campaign.status == "completed"
        recipients = db.session.scalars(db.select(CampaignRecipient)).all()
        assert {r.state for r in recipients} == {"sent", "delivered", "read", "failed",
                                                 "skipped", "unknown"}
        assert any(r.replied_at for r in recipients)
        results = db.session.get(CampaignResult, campaign.id).as_dict()
        assert results["total"] == len(recipients)
        assert results["queued"] == 0
        assert results["replied"] == sum(1 for r in recipients if r.replied_at)
        assert results["read"] == sum(1 for r in recipients if r.state == "read")
        assert {o.phone for o in db.session.scalars(db.select(OptOut))} == {
            r.phone for r in recipients if r.state == "skipped"}
    run_jobs(app)
    client = app.test_client()
    assert log_in(client, DEMO_EMAIL, DEMO_PASSWORD).status_code == 303
    # Every page and fragment its links lead to opens on the demo's data, for the admin and
    # for an agent (the audit log once failed on a ticket's entry).
    pages = crawl(client)
    assert len(pages) > 50
    assert {url: status for url, status in pages.items() if status != 200} == {}
    agent = app.test_client()
    assert log_in(agent, "agent1@wasl.example", DEMO_PASSWORD).status_code == 303
    assert {url: status for url, status in crawl(agent).items() if status != 200} == {}
    assert "already exists" in seed()
    assert len(services.login_candidates(DEMO_EMAIL)) == 1


class _Links(HTMLParser):
    """The same-site links of a page that a person opens: <a href> and htmx's hx-get."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        link = attributes.get("hx-get") or (attributes.get("href") if tag == "a" else None)
        if link and link.startswith("/") and "download" not in attributes:
            self.found.append(link.split("#")[0])


def crawl(client, start: str = "/", most: int = 300) -> dict[str, int]:
    """Open every page reachable from `start`, one address of each shape (a customer's page
    stands for all customers'), without signing out; the status of each."""
    def shape(url: str) -> str:
        return re.sub(r"\d+", "N", re.sub(r"=[^&]*", "", url))
    statuses: dict[str, int] = {}
    shapes: set[str] = set()
    waiting = [start]
    while waiting and len(statuses) < most:
        url = waiting.pop()
        if shape(url) in shapes or url.startswith(("/logout", "/static/")):
            continue
        shapes.add(shape(url))
        answer = client.get(url)
        statuses[url] = 200 if answer.status_code in (301, 302, 303) else answer.status_code
        if answer.mimetype == "text/html":
            links = _Links()
            links.feed(answer.text)
            waiting.extend(links.found)
    return statuses


def test_the_audit_log_names_the_member_an_action_acts_on(client, org):
    """A role change reads with the member's name, not «User #5»."""
    agent = make_user(org, "agent", full_name="Noura Al-Qahtani")
    agent_id = ident(agent)
    login(client, org.admin)
    client.post(f"/team/{agent_id}/role", data={"role": "manager"})
    text = client.get("/settings/audit").text
    row = text[text.index(arabic("Role changed")):]
    row = row[:row.index("</tr>")]
    assert "Noura Al-Qahtani" in row
    assert f"#{agent_id}" not in row


def test_the_audit_log_names_the_fields_a_change_made(client, org):
    """A ticket's change reads with the fields it changed, beside the settings' "from … to …"
    (its entry lists names where the settings' maps each to its old and new value)."""
    ticket = make_ticket(org, subject="الطابعة لا تعمل")
    with organization_context(ident(org)):
        ticket_services.update_ticket(org.admin, db.session.get(Ticket, ident(ticket)),
                                      {"status": "pending", "priority": "high"})
        db.session.flush()
    login(client, org.admin)
    client.post("/settings", data={**SETTINGS, "csrf_token": ""})
    page = client.get("/settings/audit")
    assert page.status_code == 200
    text = page.text.split('id="audit-rows"')[1]  # past the filter's choices
    row = text[text.index(arabic("Ticket changed")):]
    row = row[:row.index("</tr>")]
    assert f"#{ident(ticket)}" in row
    assert arabic("Status") in row
    assert arabic("Priority") in row
    assert arabic("Organization name") in text  # the settings' entry, from one name to another


def test_the_audit_log_filters_by_action_and_by_member(client, org):
    """The admin narrows the log to one action, or to what one member did; "Load more" keeps
    the filters, and a filter that matches nothing says so."""
    agent = make_user(org, "agent")
    agent_id, admin_id = ident(agent), ident(org.admin)
    with organization_context(ident(org)):
        for n in range(55):
            services.audit("user.login", agent, agent, n=n)
        services.audit("user.role_changed", org.admin, agent, previous="agent", role="manager")
        db.session.flush()
    login(client, org.admin)

    changes = client.get("/settings/audit?action=user.role_changed").text
    assert len(re.findall(r'<tr id="audit-\d+"', changes)) == 1
    assert arabic("Role changed") in changes

    logins = client.get(f"/settings/audit?actor={agent_id}").text
    assert len(re.findall(r'<tr id="audit-\d+"', logins)) == 50
    more = re.search(r'href="(/settings/audit\?[^"]+)"', logins.split('id="audit-more"')[1])
    assert f"actor={agent_id}" in more.group(1).replace("&amp;", "&")
    rest = client.get(more.group(1).replace("&amp;", "&"), headers=HTMX).text
    assert len(re.findall(r'<tr id="audit-\d+"', rest)) == 5

    nothing = client.get(f"/settings/audit?actor={admin_id}&action=api_key.revoked").text
    assert re.findall(r'<tr id="audit-\d+"', nothing) == []
    assert arabic("No entry matches these filters.") in nothing
    assert 'selected>' in nothing  # the filters stay chosen


def test_the_audit_log_says_which_settings_changed(client, org):
    """A settings change reads with what changed, from what to what (only that); a save that
    changes nothing records nothing."""
    login(client, org.admin)
    before = reload(org, Organization, org).timezone
    client.post("/settings", data={**SETTINGS, "timezone": before, "name": "Renamed Co"})
    client.post("/settings", data={**SETTINGS, "timezone": before, "name": "Renamed Co"})
    client.post("/settings", data={**SETTINGS, "timezone": "America/New_York",
                                   "name": "Renamed Co"})
    assert audit_actions(org).count("organization.updated") == 2
    text = client.get("/settings/audit").text.split('id="audit-rows"')[1]
    latest = text[:text.index("</tr>")]
    assert arabic("Time zone") in latest
    assert before in latest
    assert "America/New_York" in latest
    assert "Renamed Co" not in latest  # unchanged by that save


def test_the_default_language_says_whom_it_applies_to(client, org):
    """The organization's default language changes no member's own (each chose theirs): the
    settings page says so, beside the choice."""
    login(client, org.admin)
    text = client.get("/settings").text
    field = text.split('for="field-default_language"')[1].split("</div>")[0]
    assert arabic("New members' invitations are in this language unless you choose another; "
                  "each member chooses their own on their profile.") in field
