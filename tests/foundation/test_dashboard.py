"""The dashboard that tells the day: the inbox, the pipeline and its value, tasks, tickets and
their SLA, campaigns, each number a link to the list it counts; an agent's own numbers; the new
organization's checklist; the cards fetched again live; a pinned number of queries whatever the
data."""

from __future__ import annotations

import re
from datetime import timedelta

from babel.dates import format_timedelta

from crm.campaigns.models import Campaign, CampaignResult
from crm.customers import services as crm
from crm.extensions import db
from crm.foundation import services as foundation
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets import services as tickets
from crm.tickets.models import Ticket
from crm.whatsapp import inbox as whatsapp_inbox
from crm.whatsapp.dashboard import start_of_today
from tests.campaigns.factories import make_campaign
from tests.customers.factories import make_customer
from tests.factories import login, make_user
from tests.foundation import HTMX, arabic
from tests.queries import count_queries
from tests.tickets.factories import make_ticket
from tests.whatsapp.factories import make_conversation, make_message, make_profile, page_text


def _card(page: str, card: str) -> str:
    return page.split(f'id="card-{card}"')[1].split("</section>")[0]


def _stat(card: str, href_part: str) -> str:
    """The number shown by the link of `card` whose address holds `href_part`."""
    match = re.search(rf'<a href="[^"]*{re.escape(href_part)}[^"]*"[^>]*>(?:(?!</a>).)*?'
                      r'<span class="stat">([^<]*)</span>', card, re.DOTALL)
    assert match, card
    return match.group(1)


def _inbox(org, agent):
    """An inbox: two open conversations (one unread, unassigned; one the agent's), one
    pending of the agent's with unread messages, one resolved."""
    profile = make_profile(org, "sandbox")
    queue = make_conversation(profile, status="open", unread_count=2)
    theirs = make_conversation(profile, status="open", assigned_user_id=agent.id)
    make_conversation(profile, status="pending", assigned_user_id=agent.id, unread_count=1)
    make_conversation(profile, status="resolved")
    return profile, queue, theirs


def test_the_dashboard_counts_the_inbox_and_links_each_number_to_its_list(client, org):
    """Open, unassigned, unread and mine, each a link to the inbox filtered the same way,
    whose list holds as many conversations as the number says."""
    agent = make_user(org, "agent")
    _inbox(org, agent)
    login(client, org.admin)

    card = _card(page_text(client, "/"), "inbox")
    assert _stat(card, "status=open") == "2"
    assert _stat(card, "scope=unassigned") == "1"
    assert _stat(card, "unread=1") == "2"
    assert _stat(card, "scope=mine") == "0"
    unread = page_text(client, "/inbox?unread=1", headers=HTMX)
    assert unread.count('id="conversation-row-') == 2


def test_an_agent_sees_their_own_numbers(client, org):
    """An agent's inbox, pipeline and tasks count what is theirs; no unassigned queue where
    the organization keeps agents out of it."""
    agent = make_user(org, "agent")
    _inbox(org, agent)
    with organization_context(org.id):
        whatsapp_inbox.update_inbox_settings(org.admin, agents_take_unassigned=False)
    with organization_context(org.id):
        stages = crm.list_stages()
    make_customer(org, stage_id=stages[0].id, owner_id=agent.id, expected_value="500")
    make_customer(org, stage_id=stages[0].id, expected_value="9000")
    login(client, agent)

    page = page_text(client, "/")
    inbox = _card(page, "inbox")
    assert _stat(inbox, "status=open") == "1"
    assert _stat(inbox, "unread=1") == "1"
    assert "scope=unassigned" not in inbox
    pipeline = _card(page, "pipeline")
    assert _stat(pipeline, f"stage_id={stages[0].id}") == "1"
    assert f"owner_id={agent.id}" in pipeline
    assert "9,000" not in pipeline


def test_an_agent_who_takes_from_the_queue_sees_it_waiting(client, org):
    """Where agents take from the unassigned queue (the default), an agent's inbox card counts
    the open conversations waiting there, a link to that queue, which lists as many."""
    agent = make_user(org, "agent")
    profile, _queue, _theirs = _inbox(org, agent)
    make_conversation(profile, status="open")
    make_conversation(profile, status="pending")  # waiting for the customer, not for us
    login(client, agent)

    inbox_card = _card(page_text(client, "/"), "inbox")
    assert _stat(inbox_card, "scope=unassigned") == "2"
    assert _stat(inbox_card, "scope=mine") == "1"
    listed = page_text(client, "/inbox?scope=unassigned&status=open")
    assert listed.count('id="conversation-row-') == 2


def test_the_team_and_its_pending_invitations_link_to_the_team_page(client, org):
    """The team's count and the pending invitations' are links, like every number of the
    dashboard: to the members and to the invitations of the team page."""
    make_user(org, "agent")
    login(client, org.admin)
    client.post("/team/invitations", data={"email": "new@example.com", "role": "agent",
                                           "language": "ar"})

    page = page_text(client, "/")
    assert _stat(_card(page, "team"), "/team") == "2"
    assert _stat(_card(page, "invitations"), "/team#invitations") == "1"
    assert 'id="invitations"' in page_text(client, "/team")


def test_the_pipeline_card_shows_customers_and_value_per_stage(client, org):
    """Each stage's customers (a link to them) and their value in the organization's
    currency, kept left to right in an Arabic page."""
    with organization_context(org.id):
        stages = crm.list_stages()
    make_customer(org, stage_id=stages[1].id, expected_value="1250.50")
    make_customer(org, stage_id=stages[1].id, expected_value="٢٠٠٠")
    login(client, org.admin)

    pipeline = _card(page_text(client, "/"), "pipeline")
    assert _stat(pipeline, f"stage_id={stages[1].id}") == "2"
    assert re.search(r'<span class="ltr" dir="ltr">[^<]*3,250\.50[^<]*ر\.س', pipeline), pipeline


def test_tasks_due_today_and_overdue_link_to_their_lists(client, org):
    """Tasks due today and overdue are counted and listed on the tasks page."""
    customer = make_customer(org)
    with organization_context(org.id):
        crm.add_activity(org.admin, customer, "task", "Late call",
                         (utcnow() - timedelta(days=2)).isoformat())
        crm.add_activity(org.admin, customer, "task", "Today's call",
                         (utcnow() + timedelta(minutes=1)).isoformat())
        db.session.flush()
    login(client, org.admin)

    tasks = _card(page_text(client, "/"), "tasks-today")
    assert _stat(tasks, "due=today") == "1"
    assert _stat(tasks, "due=overdue") == "1"
    overdue = page_text(client, "/customers/tasks?due=overdue")
    assert "Late call" in overdue
    assert "Today&#39;s call" not in overdue


def test_the_readers_tasks_say_which_are_overdue(client, org):
    """The reader's list holds their tasks due today and their overdue ones, as the counts
    above it do: it says so in its title, and each overdue task says it is overdue."""
    customer = make_customer(org)
    with organization_context(org.id):
        crm.add_activity(org.admin, customer, "task", "Late call",
                         (utcnow() - timedelta(days=2)).isoformat())
        crm.add_activity(org.admin, customer, "task", "Today's call",
                         (utcnow() + timedelta(minutes=1)).isoformat())
        db.session.flush()
    login(client, org.admin)

    tasks = _card(page_text(client, "/"), "tasks-today")

    assert f"<h3>{arabic('Your tasks due today and overdue')}</h3>" in tasks
    late, today = tasks.split('<ul class="pick-list">')[1].split("</li>")[:2]
    assert "Late call" in late
    assert f'<span class="badge overdue">{arabic("Overdue")}</span>' in late
    assert "Today&#39;s call" in today
    assert "overdue" not in today


def test_under_the_teams_counts_the_tasks_listed_say_they_are_the_readers_own(client, org):
    """An admin's card counts the team's tasks, and lists only the admin's own below them:
    the list says whose, so «1 due today» above an empty list reads as no contradiction."""
    agent = make_user(org, "agent")
    customer = make_customer(org)
    with organization_context(org.id):
        crm.add_activity(org.admin, customer, "task", "The agent's call",
                         (utcnow() + timedelta(minutes=1)).isoformat(), agent.id)
        db.session.flush()
    login(client, org.admin)

    tasks = _card(page_text(client, "/"), "tasks-today")
    assert _stat(tasks, "due=today") == "1"
    assert arabic("Your tasks due today and overdue") in tasks
    assert arabic("None of your tasks is due today or overdue.") in tasks
    assert "The agent&#39;s call" not in tasks


def test_a_new_organization_sees_its_checklist_until_done(client, org):
    """The checklist: try the sandbox (one click, in a window beside), connect a number,
    import customers, invite the team; it goes once every step is done."""
    login(client, org.admin)
    page = page_text(client, "/")
    checklist = page.split('id="onboarding"')[1].split("</section>")[0]
    assert re.search(r'<form method="post" action="/whatsapp/sandbox/try"[^>]*'
                     r'target="wasl-sandbox"', checklist), checklist
    assert arabic("Invite your team") in checklist
    assert checklist.count('class="todo"') == 4

    make_user(org, "agent")
    profile = make_profile(org, "sandbox")
    make_conversation(profile)
    make_profile(org, "cloud")
    assert page_text(client, "/").count('class="done"') == 3
    with organization_context(org.id):
        db.session.execute(db.text(
            "INSERT INTO customer_imports (organization_id, filename, path, status) "
            "VALUES (:org, 'a.csv', 'a.csv', 'done')"), {"org": org.id})
    assert 'id="onboarding"' not in page_text(client, "/")


def test_the_checklist_leaves_out_the_steps_of_a_switched_off_module(client, org):
    """With WhatsApp switched off, the checklist offers neither the sandbox nor a number
    (their pages answer 404); the other steps stay."""
    with organization_context(org.id):
        foundation.set_module_enabled(org.admin, "whatsapp", False)
        db.session.flush()
    login(client, org.admin)
    checklist = page_text(client, "/").split('id="onboarding"')[1].split("</section>")[0]
    assert "/whatsapp/" not in checklist
    assert arabic("Invite your team") in checklist
    assert checklist.count('class="todo"') == 2


def test_trying_the_sandbox_makes_a_sandbox_number_once(client, org):
    """One click opens the sandbox page, with a sandbox number made if there was none."""
    login(client, org.admin)
    first = client.post("/whatsapp/sandbox/try")
    again = client.post("/whatsapp/sandbox/try")
    assert first.status_code == again.status_code == 303
    assert first.headers["Location"] == again.headers["Location"]
    assert "/whatsapp/sandbox?profile=" in first.headers["Location"]


def test_trying_the_sandbox_opens_a_chat_ready_to_type_in(client, org):
    """The click lands in a chat as a sample customer of the organization's country, ready
    to write in, rather than on a form asking for a phone number first."""
    login(client, org.admin)

    sandbox = client.get(client.post("/whatsapp/sandbox/try").headers["Location"])

    assert sandbox.status_code == 200
    assert 'id="sandbox-text"' in sandbox.text
    assert arabic("Sample customer") in sandbox.text


def test_the_cards_refresh_live_and_cost_the_same_queries_whatever_the_data(client, org):
    """The cards fetch themselves again after the events that change them; the dashboard
    and its cards run a fixed number of queries, however many conversations, customers,
    tickets and campaigns."""
    agent = make_user(org, "agent")
    login(client, org.admin)
    page = page_text(client, "/")
    trigger = re.search(r'id="dashboard-cards" hx-get="/dashboard/cards"\s+hx-trigger="([^"]*)"',
                        page).group(1)
    for event in ("newMessage", "conversationAssigned", "customerMoved", "ticketCreated",
                  "ticketAssigned", "campaignStatus", "campaignCompleted", "reconnected"):
        assert f"realtime:{event} from:body" in trigger

    with count_queries() as few:
        page_text(client, "/")
    _profile, queue, theirs = _inbox(org, agent)
    for _n in range(5):
        make_customer(org, expected_value="10")
        make_message(queue, "in")
        make_message(theirs, "out", sender_user_id=agent.id)
    for _n in range(2):
        _tickets(org, agent)
        _campaign(org, _profile, "running", total=4, queued=2, sent=2)
        _campaign(org, _profile, "completed", total=4, sent=4, delivered=3, read=2)
    page_text(client, "/")  # the tickets' events, delivered after this first commit
    with count_queries() as many:
        page_text(client, "/")
    assert len(many) == len(few) <= 16, "\n\n".join(many)
    with count_queries() as cards:
        page_text(client, "/dashboard/cards", headers=HTMX)
    assert len(cards) <= len(few)


def test_the_median_first_response_of_today(client, org):
    """The time from a contact's first message of the day to the first answer a person
    sent after it, the median over today's conversations."""
    agent = make_user(org, "agent")
    profile = make_profile(org, "sandbox")
    with organization_context(org.id):
        start = start_of_today()
    for minutes in (2, 4, 30):
        conversation = make_conversation(profile, assigned_user_id=agent.id)
        make_message(conversation, "in", created_at=start - timedelta(minutes=5))  # yesterday
        make_message(conversation, "in", created_at=start + timedelta(minutes=1))
        make_message(conversation, "in", created_at=start + timedelta(minutes=2))
        make_message(conversation, "out", sender_user_id=agent.id,
                     created_at=start + timedelta(minutes=1 + minutes))
    login(client, org.admin)

    card = _card(page_text(client, "/"), "inbox")
    four_minutes = format_timedelta(timedelta(minutes=4), threshold=1.5, locale="ar")
    assert f"<strong>{four_minutes}</strong>" in card, card


def test_the_navigation_puts_the_work_first_with_icons_and_a_live_unread_badge(client, org):
    """Inbox, Customers, Pipeline, then the administration, an icon each; the Inbox's badge
    is fetched after the page loads and after new messages, and counts unread conversations
    (an agent's own)."""
    agent = make_user(org, "agent")
    _inbox(org, agent)
    login(client, org.admin)
    sidebar = page_text(client, "/").split('id="sidebar"')[1].split("</nav>")[0]
    labels = re.findall(r'<span class="nav-label">([^<]*)</span>', sidebar)
    assert labels[:4] == [arabic(name) for name in ("Dashboard", "Inbox", "Customers",
                                                    "Pipeline")]
    assert labels.index(arabic("Team")) < labels.index(arabic("Settings")) < labels.index(
        arabic("Audit log")) < labels.index(arabic("Billing"))
    assert sidebar.count('<svg class="icon"') == len(labels)
    assert 'role="separator"' in sidebar
    loader = re.search(r'hx-get="/inbox/unread-badge"[^>]*hx-trigger="([^"]*)"', sidebar)
    assert "load" in loader.group(1)
    assert "realtime:newMessage from:body" in loader.group(1)

    badge = page_text(client, "/inbox/unread-badge", headers=HTMX)
    assert re.search(r'id="sidebar-badge-whatsapp-inbox" hx-swap-oob="true"[^>]*>2<', badge)
    login(client, agent)
    badge = page_text(client, "/inbox/unread-badge", headers=HTMX)
    assert re.search(r'id="menu-badge-whatsapp-inbox" hx-swap-oob="true"[^>]*>1<', badge)



def test_tickets_and_campaigns_are_work_with_icons_of_their_own(client, org):
    """Tickets and Campaigns sit with the work, before the line that starts the administration
    (Inbox settings after it), each with its own icon: neither the Inbox's tray nor the dot
    drawn for an icon that does not exist."""
    login(client, org.admin)
    sidebar = page_text(client, "/").split('id="sidebar"')[1].split("</nav>")[0]
    work, administration = sidebar.split('role="separator"', 1)
    icons = {label: path for path, label in re.findall(
        r'<path d="([^"]*)"/></svg><span class="nav-label">([^<]*)<', sidebar)}

    for label in ("Tickets", "Campaigns"):
        assert arabic(label) in work
    assert arabic("Inbox settings") in administration
    assert icons[arabic("Tickets")] != icons[arabic("Inbox")]
    assert len(set(icons.values())) == len(icons), icons

# -- tickets and campaigns --------------------------------------------------------------------

def _set_sla(org, ticket, status: str, due_in: timedelta) -> None:
    """Put the ticket's SLA in `status` (as the timer leaves it), its resolution due in
    `due_in`."""
    with organization_context(org.id):
        row = db.session.get(Ticket, ticket.id)
        row.sla_status, row.sla_due_at = status, utcnow() + due_in
        row.resolution_due_at = row.sla_due_at
        row.resolution_warned_at = utcnow()
        db.session.flush()


def _tickets(org, agent):
    """Tickets: open unassigned; the agent's open, pending and breaching soon; an unassigned
    breached one; a solved one (counted nowhere)."""
    make_ticket(org, subject="Unassigned question")
    make_ticket(org, subject="Agent's open", assignee_id=agent.id)
    waiting = make_ticket(org, subject="Agent's pending", assignee_id=agent.id)
    soon = make_ticket(org, subject="Breaching soon", assignee_id=agent.id, priority="urgent")
    late = make_ticket(org, subject="Breached long ago")
    done = make_ticket(org, subject="Solved")
    with organization_context(org.id):
        tickets.update_ticket(org.admin, db.session.get(Ticket, waiting.id),
                              {"status": "pending"})
        tickets.update_ticket(org.admin, db.session.get(Ticket, done.id), {"status": "solved"})
        db.session.flush()
    _set_sla(org, soon, "warning", timedelta(minutes=20))
    _set_sla(org, late, "breached", -timedelta(hours=3))
    return soon


def _row_count(client, url: str) -> int:
    return page_text(client, url, headers=HTMX).count('id="ticket-row-')


def test_the_tickets_card_counts_the_queue_and_its_sla_each_a_link_to_its_list(client, org):
    """Open, unassigned, mine, breaching soon and breached, each a link to the tickets list
    that holds as many; the soonest to breach are named with their clock."""
    agent = make_user(org, "agent")
    soon = _tickets(org, agent)
    login(client, org.admin)

    card = _card(page_text(client, "/"), "tickets")
    for part, expected in (("status=open", 4), ("view=unassigned", 2), ("view=mine", 0),
                           ("view=breaching", 1), ("view=breached", 1)):
        assert _stat(card, part) == f"{expected}", part
        href = re.search(rf'href="([^"]*{re.escape(part)}[^"]*)"', card).group(1)
        assert _row_count(client, href.replace("&amp;", "&")) == expected, href
    assert f'href="/tickets/{soon.id}"' in card
    assert "Breaching soon" in card
    assert 'class="badge sla-warning"' in card


def test_an_agent_sees_their_own_tickets_and_no_campaigns(client, org):
    """An agent's tickets card counts what is assigned to them, with no team queue; the
    campaigns card is not theirs."""
    agent = make_user(org, "agent")
    _tickets(org, agent)
    make_campaign(org, make_profile(org, "sandbox"))
    login(client, agent)

    page = page_text(client, "/")
    card = _card(page, "tickets")
    assert _stat(card, "view=mine") == "3"
    assert _stat(card, "view=breaching") == "1"
    assert _stat(card, "view=breached") == "0"
    assert "status=open" not in card
    assert "view=unassigned" not in card
    assert 'id="card-campaigns"' not in page


def _campaign(org, profile, status: str, **results):
    """A campaign of `status` with these counts (as the send paths keep them)."""
    campaign = make_campaign(org, profile, name=f"حملة {status}")
    with organization_context(org.id):
        row = db.session.get(Campaign, campaign.id)
        row.status = status
        if status not in ("draft", "scheduled"):
            row.frozen_at = utcnow()  # its list of recipients, frozen at the start
        if status == "completed":
            row.finished_at = utcnow()
        db.session.add(CampaignResult(organization_id=org.id, campaign_id=campaign.id,
                                      **results))
        db.session.flush()
    return campaign


def test_the_campaigns_card_shows_those_running_and_the_last_funnel(client, org):
    """Sending and scheduled campaigns, each count a link to that list, the running one with
    its progress; the last completed with its funnel numbers, each a link to its recipients
    in that state (the campaign page's filter)."""
    profile = make_profile(org, "sandbox")
    _campaign(org, profile, "completed", total=5, sent=5, delivered=5, read=3, replied=1)
    last = _campaign(org, profile, "completed", total=10, sent=8, delivered=6, read=4,
                     replied=2, failed=1, skipped=1)
    running = _campaign(org, profile, "running", total=40, queued=10, sent=30)
    _campaign(org, profile, "scheduled")
    _campaign(org, profile, "draft")
    login(client, make_user(org, "manager"))

    card = _card(page_text(client, "/"), "campaigns")
    assert _stat(card, "status=running") == "1"
    assert _stat(card, "status=scheduled") == "1"
    assert "status=paused" not in card
    listed = page_text(client, "/campaigns/?status=running")
    assert listed.count('<tr id="campaign-') == 1
    assert page_text(client, "/campaigns/?status=running", headers=HTMX).count(
        '<tr id="campaign-') == 1
    assert f'id="campaign-{running.id}-progress"' in card
    assert '<progress max="40" value="30"' in card
    assert f'href="/campaigns/{last.id}"' in card
    for step, count in (("sent", "8"), ("delivered", "6"), ("read", "4"), ("replied", "2"),
                        ("failed", "1")):
        figure = card.split(f'id="card-campaigns-{step}"')[1].split("</li>")[0]
        address = f"/campaigns/{last.id}/recipients?state={step}#recipients"
        assert _stat(figure, address) == count, step
        filtered = page_text(client, address.split("#")[0])
        assert re.search(rf'state={step}#recipients" aria-current="true"', filtered), step
    assert _stat(card, f"/campaigns/{last.id}/recipients#recipients") == "10"


def test_a_running_campaign_shows_its_live_funnel_with_the_same_links(client, org):
    """A campaign sending now shows its funnel as the last completed does (each figure a link
    to its recipients in that state), not only its progress bar; one still preparing its list
    shows no figures, and a scheduled one none at all."""
    profile = make_profile(org, "sandbox")
    running = _campaign(org, profile, "running", total=40, queued=10, sent=28, delivered=20,
                        read=9, replied=3, failed=2)
    preparing = _campaign(org, profile, "running")
    with organization_context(org.id):
        db.session.get(Campaign, preparing.id).frozen_at = None
        db.session.flush()
    scheduled = _campaign(org, profile, "scheduled")
    login(client, org.admin)

    card = _card(page_text(client, "/"), "campaigns")
    funnel = card.split(f'id="campaign-{running.id}-funnel"')[1].split("</ul>")[0]
    for step, count in (("sent", "28"), ("delivered", "20"), ("read", "9"), ("replied", "3"),
                        ("failed", "2")):
        figure = funnel.split(f'id="campaign-{running.id}-funnel-{step}"')[1].split("</li>")[0]
        assert _stat(figure, f"/campaigns/{running.id}/recipients?state={step}#recipients") \
            == count, step
    assert _stat(funnel, f"/campaigns/{running.id}/recipients#recipients") == "40"
    assert f"/campaigns/{preparing.id}/recipients" not in card
    assert f"/campaigns/{scheduled.id}/recipients" not in card


def test_cards_of_a_module_switched_off_are_not_shown(client, org):
    """Tickets and campaigns switched off: their cards go (the others stay)."""
    login(client, org.admin)
    page = page_text(client, "/")
    assert 'id="card-tickets"' in page
    assert 'id="card-campaigns"' in page
    with organization_context(org.id):
        foundation.set_module_enabled(org.admin, "ticketing", False)
        foundation.set_module_enabled(org.admin, "campaigns", False)
        db.session.flush()
    page = page_text(client, "/")
    assert 'id="card-tickets"' not in page
    assert 'id="card-campaigns"' not in page
    assert 'id="card-inbox"' in page
