"""Ticketing's pages as browsers (plain and htmx) use them: the list and its views, a ticket's
page, the new-ticket form, attachments, SLA badges, the sections on a customer's page and in
the inbox, the settings pages, the bell; and what each role may see."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from flask_babel import force_locale, format_date, pgettext
from sqlalchemy import func, select

from crm.extensions import db
from crm.foundation import notifications
from crm.foundation import services as foundation_services
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets import badges, services
from crm.tickets.models import Ticket, TicketComment
from tests.customers.factories import make_customer
from tests.factories import login, make_org, make_user
from tests.foundation import HTMX, arabic, ident
from tests.queries import assert_max_queries
from tests.tickets.factories import (
    backdate,
    make_attachment,
    make_suggestion,
    make_team,
    make_ticket,
    reload_ticket,
    upload,
)
from tests.whatsapp.factories import make_conversation, make_message, make_profile


@pytest.fixture
def admin(client, org):
    login(client, org.admin)
    return org.admin


def text_of(response) -> str:
    return response.get_data(as_text=True)


def row_ids(html: str) -> set[int]:
    return {int(found) for found in re.findall(r'id="ticket-row-(\d+)"', html)}


# -- the list ----------------------------------------------------------------------------------

def test_an_agent_lists_only_the_tickets_assigned_to_them(client, org):
    """An agent's list (mine by default, and "all") shows only their tickets."""
    agent = make_user(org, "agent")
    theirs = make_ticket(org, assignee_id=agent.id)
    other = make_ticket(org)
    login(client, agent)

    for url in ("/tickets/", "/tickets/?view=all"):
        ids = row_ids(text_of(client.get(url)))
        assert ident(theirs) in ids
        assert ident(other) not in ids


def test_views_filters_and_search_narrow_the_list(client, org, admin):
    """Unassigned, breached, a status filter and a search by number or subject each list
    what they say."""
    agent = make_user(org, "agent")
    assigned = make_ticket(org, subject="Printer broken", assignee_id=agent.id)
    unassigned = make_ticket(org, subject="Refund request", priority="high")
    late = make_ticket(org, subject="Late delivery", priority="urgent")
    backdate(org, late, timedelta(days=30))
    with organization_context(ident(org)):
        db.session.get(Ticket, ident(late)).sla_status = "breached"
        db.session.flush()

    unassigned_ids = row_ids(text_of(client.get("/tickets/?view=unassigned")))
    assert ident(unassigned) in unassigned_ids
    assert ident(assigned) not in unassigned_ids
    assert row_ids(text_of(client.get("/tickets/?view=breached"))) == {ident(late)}
    assert row_ids(text_of(client.get("/tickets/?priority=high"))) == {ident(unassigned)}
    number = reload_ticket(org, assigned).number
    assert row_ids(text_of(client.get(f"/tickets/?search=%23{number}"))) == {ident(assigned)}
    assert row_ids(text_of(client.get("/tickets/?search=refund"))) == {ident(unassigned)}


def test_the_list_pages_with_a_cursor(client, org, admin, monkeypatch):
    """"Load more" carries a cursor to the next page; the two pages share no ticket."""
    from crm.tickets import views

    monkeypatch.setattr(views, "PAGE", 2)
    made = {ident(make_ticket(org)) for _ in range(3)}
    first = text_of(client.get("/tickets/"))
    cursor = re.search(r'cursor=([^&"]+)', first).group(1)
    second = text_of(client.get(f"/tickets/?cursor={cursor}", headers=HTMX))
    assert len(row_ids(first)) == 2
    assert row_ids(first) | row_ids(second) == made
    assert not row_ids(first) & row_ids(second)


def test_an_empty_list_says_so(client, org, admin):
    """No tickets: the page says how to open one."""
    assert "No tickets yet." in text_of(client.get("/tickets/?lang=en")) or arabic(
        "No tickets yet.") in text_of(client.get("/tickets/"))


def test_bulk_close_asks_first_and_closes_the_checked_tickets(client, org, admin):
    """The bulk close button asks for confirmation; posting closes only the checked ones."""
    first, second, kept = make_ticket(org), make_ticket(org), make_ticket(org)
    page = text_of(client.get("/tickets/"))
    assert 'value="close"' in page
    assert "hx-confirm" in page

    response = client.post("/tickets/bulk", data={
        "action": "close", "ticket_ids": [ident(first), ident(second)]}, headers=HTMX)
    assert response.status_code == 200
    assert reload_ticket(org, first).status == "closed"
    assert reload_ticket(org, second).status == "closed"
    assert reload_ticket(org, kept).status == "open"


def test_bulk_assign_gives_the_checked_tickets_to_someone(client, org, admin):
    agent = make_user(org, "agent")
    ticket = make_ticket(org)
    response = client.post("/tickets/bulk", data={
        "action": "assign", "assignee_id": agent.id, "ticket_ids": [ident(ticket)]})
    assert response.status_code == 303
    assert reload_ticket(org, ticket).assignee_id == agent.id


# -- one ticket --------------------------------------------------------------------------------

def test_an_agent_gets_404_for_a_ticket_not_assigned_to_them(client, org):
    agent = make_user(org, "agent")
    ticket = make_ticket(org)
    login(client, agent)
    assert client.get(f"/tickets/{ident(ticket)}").status_code == 404
    assert client.get(f"/tickets/{ident(ticket)}/sla").status_code == 404


def test_another_organizations_ticket_answers_404(client, org, admin):
    ticket = make_ticket(make_org())
    assert client.get(f"/tickets/{ident(ticket)}").status_code == 404


def test_fields_are_edited_in_place(client, org, admin):
    """A change posted by htmx answers with the fields, saved, and refreshes dependants."""
    ticket = make_ticket(org, subject="Broken screen")
    version = reload_ticket(org, ticket).version
    response = client.post(f"/tickets/{ident(ticket)}", headers=HTMX, data={
        "version": version, "subject": "Broken screen", "status": "pending",
        "priority": "urgent", "tags": "vip, screen", "type_id": "", "team_id": ""})
    assert response.status_code == 200
    assert response.headers["HX-Trigger"] == "ticketsChanged"
    assert f'id="ticket-{ident(ticket)}-fields"' in text_of(response)
    saved = reload_ticket(org, ticket)
    assert (saved.status, saved.priority, saved.tags) == ("pending", "urgent", ["vip", "screen"])


def test_an_edit_from_a_stale_page_is_refused(client, org, admin):
    """Someone changed the ticket since the form was shown: 409, and nothing is overwritten."""
    ticket = make_ticket(org)
    version = reload_ticket(org, ticket).version
    with organization_context(ident(org)):
        services.update_ticket(org.admin, db.session.get(Ticket, ident(ticket)),
                               {"priority": "high"})
        db.session.flush()
    response = client.post(f"/tickets/{ident(ticket)}", headers=HTMX,
                           data={"version": version, "priority": "low"})
    assert response.status_code == 409
    assert reload_ticket(org, ticket).priority == "high"


def test_a_bad_field_is_refused_with_a_translated_error(client, org, admin):
    ticket = make_ticket(org)
    response = client.post(f"/tickets/{ident(ticket)}", headers=HTMX,
                           data={"subject": "", "version": reload_ticket(org, ticket).version})
    assert response.status_code == 422
    assert arabic("This field is required.") in text_of(response)


def test_assigning_from_the_page(client, org, admin):
    agent = make_user(org, "agent")
    ticket = make_ticket(org)
    response = client.post(f"/tickets/{ident(ticket)}/assign", data={"assignee_id": agent.id})
    assert response.status_code == 303
    assert reload_ticket(org, ticket).assignee_id == agent.id


def test_an_agent_who_gives_their_ticket_away_goes_back_to_the_list(client, org):
    agent, other = make_user(org, "agent"), make_user(org, "agent")
    ticket = make_ticket(org, assignee_id=agent.id)
    login(client, agent)
    response = client.post(f"/tickets/{ident(ticket)}/assign", headers=HTMX,
                           data={"assignee_id": other.id})
    assert response.headers["HX-Location"] == "/tickets/"


def test_public_replies_and_internal_notes_are_told_apart(client, org, admin):
    """The thread marks a public reply and an internal note differently, in words too."""
    ticket = make_ticket(org)
    client.post(f"/tickets/{ident(ticket)}/comments", data={"body": "We are on it", "public": "1"})
    client.post(f"/tickets/{ident(ticket)}/comments", data={"body": "Check the logs",
                                                            "public": "0"})
    page = text_of(client.get(f"/tickets/{ident(ticket)}"))
    public = re.search(r'class="comment comment-public".*?</li>', page, re.S).group(0)
    note = re.search(r'class="comment comment-note".*?</li>', page, re.S).group(0)
    assert "We are on it" in public
    assert arabic("Public reply") in public
    assert "Check the logs" in note
    assert arabic("Internal note") in note
    assert reload_ticket(org, ticket).first_responded_at is not None


def test_a_comment_by_htmx_answers_a_fresh_composer_and_the_comment(client, org, admin):
    ticket = make_ticket(org)
    response = client.post(f"/tickets/{ident(ticket)}/comments", headers=HTMX,
                           data={"body": "Noted", "public": "0"})
    body = text_of(response)
    assert response.status_code == 200
    assert f'id="ticket-{ident(ticket)}-comments" class="comments" hx-swap-oob="true"' in body
    assert "Noted" in body


def test_an_empty_comment_is_refused(client, org, admin):
    ticket = make_ticket(org)
    response = client.post(f"/tickets/{ident(ticket)}/comments", data={"body": " ",
                                                                       "public": "1"})
    assert response.status_code == 422
    assert arabic("Write a reply or attach a file.") in text_of(response)


def test_attachments_are_uploaded_and_served_only_to_who_may_see_the_ticket(client, org):
    """A file sent with a note downloads for the admin; an agent not assigned gets 404."""
    login(client, org.admin)
    ticket = make_ticket(org)
    response = client.post(f"/tickets/{ident(ticket)}/comments", data={
        "body": "", "public": "0", "files": [upload(b"%PDF-1.4 hello", "report.pdf")]},
        content_type="multipart/form-data")
    assert response.status_code == 303
    with organization_context(ident(org)):
        attachment_id = db.session.scalar(select(TicketComment).where(
            TicketComment.ticket_id == ident(ticket))).attachments[0].id
    download = client.get(f"/tickets/attachments/{attachment_id}")
    assert download.status_code == 200
    assert download.data == b"%PDF-1.4 hello"
    assert "attachment" in download.headers["Content-Disposition"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"

    login(client, make_user(org, "agent"))
    assert client.get(f"/tickets/attachments/{attachment_id}").status_code == 404


def test_another_organizations_attachment_answers_404(client, org, admin):
    other = make_org()
    attachment = make_attachment(make_ticket(other))
    assert client.get(f"/tickets/attachments/{attachment.id}").status_code == 404


def test_the_timeline_lists_every_change(client, org, admin):
    ticket = make_ticket(org)
    client.post(f"/tickets/{ident(ticket)}", data={
        "status": "pending", "version": reload_ticket(org, ticket).version})
    html = text_of(client.get(f"/tickets/{ident(ticket)}/timeline"))
    assert arabic("Ticket opened") in html
    assert arabic("Open") in html
    with force_locale("ar"):
        assert str(pgettext("ticket status", "Pending")) in html


# -- SLA badges --------------------------------------------------------------------------------

def test_badges_count_down_in_the_pages_digits_in_saudi_arabia(client, org, admin):
    """An Arabic reader in Saudi Arabia reads the time left in the Latin digits of every other
    number of the page («42 د 30 ث», not «٤٢ د ٣٠ ث»), and the badges poll again, often when a
    clock is under an hour away."""
    ticket = make_ticket(org, priority="urgent")
    with organization_context(ident(org)):
        row = db.session.get(Ticket, ident(ticket))
        row.first_response_due_at = utcnow() + timedelta(minutes=42, seconds=30)
        db.session.flush()
    html = text_of(client.get(f"/tickets/{ident(ticket)}/sla"))
    assert not re.search(r"[٠-٩]", html)
    assert 'hx-trigger="every 5s"' in html
    assert re.search(r'class="sla-text">[^<]*\b4[12] د', html)


def _due_in(org, ticket, delta: timedelta) -> None:
    with organization_context(ident(org)):
        db.session.get(Ticket, ident(ticket)).first_response_due_at = utcnow() + delta
        db.session.flush()


def test_the_lists_badges_poll_as_a_tickets_page_does(client, org, admin):
    """The list asks for its rows' badges again, every 5 s while a clock is under an hour
    away, each row's badge naming its ticket for it."""
    close = make_ticket(org, priority="urgent")
    _due_in(org, close, timedelta(minutes=42))
    html = text_of(client.get("/tickets/"))
    poller = re.search(r'<div id="ticket-sla-poll"[^>]*>', html).group(0)
    assert 'hx-get="/tickets/sla"' in poller
    assert 'hx-trigger="every 5s"' in poller
    assert f'name="sla_ids" value="{ident(close)}"' in html


def test_the_lists_badges_count_down_in_the_pages_digits(client, org, admin):
    """Asked again, the list's badges come back each swapped in its place (out of band), in
    the reader's digits, with the poller and its next interval."""
    close, far = make_ticket(org, priority="urgent"), make_ticket(org, priority="low")
    _due_in(org, close, timedelta(minutes=42, seconds=30))
    _due_in(org, far, timedelta(hours=5))
    url = f"/tickets/sla?sla_ids={ident(close)}&sla_ids={ident(far)}"
    client.get(url, headers=HTMX)  # what the factories left to deliver
    with assert_max_queries(3):  # the session, the module switches, the tickets
        response = client.get(url, headers=HTMX)
    html = text_of(response)
    badge = re.search(rf'<span id="ticket-{ident(close)}-sla-compact"[^>]*>(.*?)</span>',
                      html, re.S)
    assert 'hx-swap-oob="true"' in badge.group(0)
    assert not re.search(r"[٠-٩]", badge.group(1))
    assert re.search(r"\b4[12] د", badge.group(1).split(">")[-1])
    assert f'id="ticket-{ident(far)}-sla-compact"' in html
    assert 'id="ticket-sla-poll"' in html
    assert 'hx-trigger="every 5s"' in html


def test_the_lists_badges_show_only_tickets_the_reader_may_see(client, org):
    """Ids of another organization's tickets, or of an agent's colleague's, get nothing."""
    agent = make_user(org, "agent")
    theirs, colleagues = make_ticket(org, assignee_id=agent.id), make_ticket(org)
    elsewhere = make_ticket(make_org())
    login(client, agent)
    ids = "&".join(f"sla_ids={ident(t)}" for t in (theirs, colleagues, elsewhere))
    html = text_of(client.get(f"/tickets/sla?{ids}&sla_ids=junk", headers=HTMX))
    shown = {int(found) for found in re.findall(r'id="ticket-(\d+)-sla-compact"', html)}
    assert shown == {ident(theirs)}
    assert 'hx-trigger="every 30s"' in html


def test_badges_say_overdue_in_english_with_latin_digits(client, org):
    user = make_user(org, "manager")
    with organization_context(ident(org)):
        foundation_services.set_language(user, "en")
        db.session.flush()
    login(client, user)
    ticket = make_ticket(org)
    backdate(org, ticket, timedelta(days=40))
    html = text_of(client.get(f"/tickets/{ident(ticket)}/sla"))
    assert re.search(r"Overdue by \d+ days? \d+ hr", html)


def test_format_duration_shows_two_units():
    from babel import Locale

    assert badges.format_duration(timedelta(hours=3, minutes=59, seconds=10),
                                  Locale.parse("en")) == "3 hr 59 min"
    assert badges.format_duration(timedelta(minutes=12, seconds=5),
                                  Locale.parse("ar_SA")) == "12 د 5 ث"
    assert badges.format_duration(timedelta(minutes=12, seconds=5),
                                  Locale.parse("ar_AE")) == "12 د 5 ث"


# -- a new ticket ------------------------------------------------------------------------------

def test_a_new_ticket_opens_from_the_form(client, org, admin):
    response = client.post("/tickets/new", data={"subject": "No invoice", "priority": "high",
                                                 "tags": "billing"})
    assert response.status_code == 303
    with organization_context(ident(org)):
        ticket = db.session.scalar(select(Ticket).where(Ticket.subject == "No invoice"))
    assert response.location.endswith(f"/tickets/{ticket.id}")
    assert (ticket.priority, ticket.tags, ticket.source) == ("high", ["billing"], "manual")


def test_the_new_ticket_form_shows_translated_errors(client, org, admin):
    response = client.post("/tickets/new", data={"subject": "", "priority": "whenever"})
    assert response.status_code == 422
    html = text_of(response)
    assert arabic("This field is required.") in html
    assert arabic("Choose one of the listed options.") in html


def test_the_new_ticket_form_is_prefilled_for_a_customer(client, org, admin):
    customer = make_customer(org, name="Huda Saleh")
    html = text_of(client.get(f"/tickets/new?customer_id={customer.id}"))
    assert "Huda Saleh" in html
    assert f'name="customer_id" value="{customer.id}"' in html


def test_the_new_ticket_form_searches_customers_to_attach(client, org, admin):
    """The form's customer field searches the CRM as the inbox's new chat does (name or
    phone, with htmx) and offers each match as a radio button of `customer_id`, so the
    keyboard moves among them; another organization's customers never show."""
    huda = make_customer(org, name="Huda Saleh", phone="+966501234567")
    make_customer(make_org(), name="Huda Elsewhere")
    form = text_of(client.get("/tickets/new"))
    search = re.search(r'<input id="field-customer-search"[^>]*>', form).group(0)
    assert 'hx-get="/customers/pick"' in search
    assert 'hx-target="#customer-picks"' in search
    assert '<label for="field-customer-search">' in form

    for query in ("huda", "0501234567"):
        picks = text_of(client.get(f"/customers/pick?q={query}", headers=HTMX))
        assert f'type="radio" name="customer_id" value="{ident(huda)}"' in picks
        assert "Elsewhere" not in picks
    assert arabic("No customer matches.") in text_of(
        client.get("/customers/pick?q=nobody", headers=HTMX))


def test_a_search_keeps_the_customer_already_chosen(client, org, admin):
    """Searching again keeps the chosen customer, checked, before the new matches."""
    huda, omar = make_customer(org, name="Huda Saleh"), make_customer(org, name="Omar Ali")
    picks = text_of(client.get(f"/customers/pick?q=omar&customer_id={ident(huda)}",
                               headers=HTMX))
    assert f'value="{ident(huda)}" checked' in picks
    assert f'value="{ident(omar)}"' in picks
    assert picks.index("Huda Saleh") < picks.index("Omar Ali")


def test_a_new_ticket_is_attached_to_the_chosen_customer(client, org):
    """An agent (who reads the CRM) attaches the new ticket to the customer they picked."""
    agent = make_user(org, "agent")
    customer = make_customer(org, name="Huda Saleh")
    login(client, agent)
    response = client.post("/tickets/new", data={"subject": "Wrong size",
                                                 "customer_id": str(ident(customer))})
    assert response.status_code == 303
    with organization_context(ident(org)):
        ticket = db.session.scalar(select(Ticket).where(Ticket.subject == "Wrong size"))
    assert ticket.customer_id == ident(customer)


def test_another_organizations_customer_is_refused_and_nothing_is_opened(client, org, admin):
    """A customer id of another organization is refused beside the field, in Arabic, the
    form keeps what was typed, and no ticket is opened."""
    stranger = make_customer(make_org(), name="Stranger Danger")
    response = client.post("/tickets/new", data={"subject": "Wrong size",
                                                 "customer_id": str(ident(stranger))})
    assert response.status_code == 422
    html = text_of(response)
    assert arabic("This customer does not exist. Choose one from the list.") in html
    assert "Stranger Danger" not in html
    assert 'value="Wrong size"' in html
    with organization_context(ident(org)):
        assert db.session.scalar(select(func.count()).select_from(Ticket)) == 0


# -- sections of other pages -----------------------------------------------------------------

def test_a_customers_page_lists_their_tickets(client, org, admin):
    customer = make_customer(org, name="Huda Saleh")
    make_ticket(org, subject="Wrong size", customer_id=customer.id)
    page = text_of(client.get(f"/customers/{customer.id}"))
    assert f"/tickets/customers/{customer.id}" in page
    section = text_of(client.get(f"/tickets/customers/{customer.id}"))
    assert "Wrong size" in section
    assert f"/tickets/new?customer_id={customer.id}" in section


def test_a_customers_page_shows_no_tickets_when_ticketing_is_off(client, org, admin):
    customer = make_customer(org)
    with organization_context(ident(org)):
        foundation_services.set_module_enabled(org.admin, "ticketing", False)
        db.session.flush()
    assert "/tickets/customers/" not in text_of(client.get(f"/customers/{customer.id}"))


def test_the_inbox_panel_suggests_a_ticket_and_opens_it_in_one_click(client, org, admin):
    """A keyword in the customer's message shows "create a ticket?" with the subject filled
    in; creating it links the conversation and the suggestion goes."""
    conversation = make_conversation(make_profile(org))
    make_message(conversation, body="عندي مشكلة في الطلب")
    make_suggestion(conversation)
    panel = text_of(client.get(f"/inbox/conversations/{conversation.id}"))
    assert f"/tickets/conversations/{conversation.id}" in panel
    section = text_of(client.get(f"/tickets/conversations/{conversation.id}", headers=HTMX))
    assert arabic("Create a ticket?") in section
    assert 'value="عندي مشكلة في الطلب"' in section

    response = client.post(f"/tickets/conversations/{conversation.id}", headers=HTMX, data={
        "subject": "عندي مشكلة في الطلب", "priority": "normal"})
    assert response.status_code == 200
    assert arabic("Create a ticket?") not in text_of(response)
    with organization_context(ident(org)):
        ticket = db.session.scalar(select(Ticket).where(
            Ticket.conversation_id == conversation.id))
    assert (ticket.subject, ticket.source) == ("عندي مشكلة في الطلب", "whatsapp")


def test_one_click_takes_the_subject_from_the_last_message(client, org, admin):
    conversation = make_conversation(make_profile(org))
    make_message(conversation, body="The parcel never came\nOrder 55")
    client.post(f"/tickets/conversations/{conversation.id}")
    with organization_context(ident(org)):
        ticket = db.session.scalar(select(Ticket).where(
            Ticket.conversation_id == conversation.id))
    assert ticket.subject == "The parcel never came"


def test_a_suggestion_can_be_dismissed(client, org, admin):
    conversation = make_conversation(make_profile(org))
    suggestion = make_suggestion(conversation)
    client.post(f"/tickets/suggestions/{suggestion.id}/dismiss", headers=HTMX)
    with organization_context(ident(org)):
        assert services.suggestion_for(conversation.id) is None


# -- words ----------------------------------------------------------------------------------------

def test_a_pending_ticket_waits_on_the_customer_in_arabic(client, org, admin):
    """«Pending» is the ticket's own word (waiting on the customer), not the invitation's
    «بانتظار القبول» (waiting to be accepted) that the shared msgid gave it."""
    ticket = make_ticket(org, subject="Waiting", status="pending")
    with force_locale("ar"):
        waiting = str(pgettext("ticket status", "Pending"))
    assert waiting != arabic("Pending")
    listed = text_of(client.get("/tickets/"))
    shown = text_of(client.get(f"/tickets/{ident(ticket)}"))
    for html in (listed, shown):
        assert waiting in html
        assert arabic("Pending") not in html


def test_a_change_in_the_timeline_points_from_the_old_value_to_the_new_in_reading_order(
        client, org, admin):
    """Arabic reads right to left, so its arrow points left: «مفتوحة ← محلولة»."""
    ticket = make_ticket(org)
    client.post(f"/tickets/{ident(ticket)}", data={
        "status": "solved", "version": reload_ticket(org, ticket).version})
    html = text_of(client.get(f"/tickets/{ident(ticket)}/timeline"))
    assert f"{arabic('Open')} ← {arabic('Solved')}" in html
    assert "→" not in html
    with organization_context(ident(org)):
        foundation_services.set_language(org.admin, "en")
        db.session.flush()
    assert "Open → Solved" in text_of(client.get(f"/tickets/{ident(ticket)}/timeline"))


def test_without_a_conversation_the_composer_says_a_public_reply_is_not_sent(
        client, org, admin):
    """«Reply to the customer» on a ticket with no WhatsApp conversation only records the
    reply: the page says so, where a linked ticket says it goes out on WhatsApp."""
    alone = make_ticket(org, subject="By phone")
    html = text_of(client.get(f"/tickets/{ident(alone)}"))
    assert arabic("This ticket has no WhatsApp conversation: a public reply is recorded "
                  "here, not sent.") in html
    assert arabic("A public reply goes to the customer on WhatsApp.") not in html


# -- ticketing without the other modules -------------------------------------------------------

def test_tickets_work_with_whatsapp_and_the_crm_switched_off(client, org, admin):
    with organization_context(ident(org)):
        for module in ("whatsapp", "crm"):
            foundation_services.set_module_enabled(org.admin, module, False)
        db.session.flush()
    assert client.post("/tickets/new", data={"subject": "Alone"}).status_code == 303
    assert client.get("/tickets/").status_code == 200


def test_the_sidebar_shows_tickets_after_the_pipeline(client, org, admin):
    html = text_of(client.get("/tickets/"))
    nav = re.search(r'<nav class="sidebar".*?</nav>', html, re.S).group(0)
    assert nav.index("/customers/board") < nav.index('href="/tickets/"')


# -- settings ----------------------------------------------------------------------------------

def test_the_sla_page_shows_the_worked_example(client, org, admin):
    """A normal ticket opened Thursday 16:00 in Riyadh is due Sunday 12:00 (first response
    in four business hours: one on Thursday, three on Sunday)."""
    html = text_of(client.get("/tickets/settings?priority=normal&opened_at=2026-12-03T16:00"))
    with organization_context(ident(org)):
        due = services.sla_preview("normal", "2026-12-03T16:00")
    assert due["first_response_due_at"].isoformat() == "2026-12-06T12:00:00+03:00"
    assert "2026" in html
    assert arabic("Worked example") in html
    assert re.search("الأحد", html)


def test_policies_are_saved_from_the_settings_page(client, org, admin):
    data = {}
    for index, priority in enumerate(("low", "normal", "high", "urgent")):
        data |= {f"policies-{index}-priority": priority, f"policies-{index}-type_id": "",
                 f"policies-{index}-first_response_minutes": "30",
                 f"policies-{index}-next_response_minutes": "60",
                 f"policies-{index}-resolution_minutes": "120"}
    assert client.post("/tickets/settings/policies", data=data).status_code == 303
    with organization_context(ident(org)):
        assert {p.first_response_minutes for p in services.list_policies()} == {30}


def test_a_bad_policy_is_refused_beside_its_field(client, org, admin):
    response = client.post("/tickets/settings/policies", data={
        "policies-0-priority": "low", "policies-0-type_id": "",
        "policies-0-first_response_minutes": "0", "policies-0-next_response_minutes": "1",
        "policies-0-resolution_minutes": "1"})
    assert response.status_code == 422


def test_refused_hours_keep_what_was_typed_and_say_which_day(client, org, admin):
    """A Thursday ending before it starts: the page keeps every typed time and the days
    checked, and says the error inside Thursday's row, not under the whole week."""
    hours = {"day-6-open": "1", "day-6-0-start": "08:30", "day-6-0-end": "16:30",
             "day-3-open": "1", "day-3-0-start": "10:00", "day-3-0-end": "09:00",
             "day-3-1-start": "13:00", "day-3-1-end": "15:00"}
    with organization_context(ident(org)):
        before = services.business_hours()
    refused = client.post("/tickets/settings/hours", data=hours)
    assert refused.status_code == 422
    html = text_of(refused)
    for name, value in hours.items():
        if name.endswith("-open"):
            assert re.search(rf'name="{name}" value="1" checked', html), name
        else:
            assert re.search(rf'name="{name}" type="text" value="{value}"', html), name
    assert re.search(r'name="day-0-open" value="1" checked', html) is None  # Monday: off
    thursday = re.search(r'<fieldset class="hours-row"[^>]*>(?:(?!</fieldset>).)*'
                         r'name="day-3-open".*?</fieldset>', html, re.S).group(0)
    assert arabic("End after the start.") in thursday
    assert html.count(arabic("End after the start.")) == 1
    with organization_context(ident(org)):
        assert services.business_hours() == before


def test_holidays_are_dated_in_the_readers_language_with_their_weekday(client, org, admin):
    """«الخميس، 19 مارس 2026», not «2026-03-19»: a date people read, and whether it falls
    on a working day."""
    assert client.post("/tickets/settings/holidays", data={
        "day": "2030-05-05", "name": "Founders' day"}).status_code == 303
    html = text_of(client.get("/tickets/settings/calendar?year=2030"))
    with force_locale("ar"):
        shown = format_date(date(2030, 5, 5), "full")
    assert shown in html
    assert ">2030-05-05<" not in html


def test_the_working_hours_name_the_time_zone_in_the_readers_language(client, org, admin):
    """The working hours are «in the organization's time zone (توقيت المملكة العربية
    السعودية)», not (Asia/Riyadh); in English, Saudi Arabia Time."""
    html = text_of(client.get("/tickets/settings/calendar"))
    assert arabic("In the organization's time zone (%(zone)s). A day that is not checked is "
                  "a day off.", zone="توقيت المملكة العربية السعودية") in html
    assert "Asia/Riyadh" not in html
    client.post("/language", data={"language": "en"})
    html = text_of(client.get("/tickets/settings/calendar"))
    assert "In the organization's time zone (Saudi Arabia Time)." in html


def test_hours_holidays_types_keywords_and_teams_are_managed(client, org, admin):
    agent = make_user(org, "agent")
    hours = {"day-0-open": "1", "day-0-0-start": "08:00", "day-0-0-end": "12:00",
             "day-0-1-start": "13:00", "day-0-1-end": "17:00"}
    assert client.post("/tickets/settings/hours", data=hours).status_code == 303
    assert client.post("/tickets/settings/holidays", data={
        "day": "2030-05-05", "name": "Founders' day"}).status_code == 303
    assert client.post("/tickets/settings/types", data={
        "name_ar": "تركيب", "name_en": "Installation"}).status_code == 303
    assert client.post("/tickets/settings/keywords", data={"keyword": "خربان"}).status_code == 303
    assert client.post("/tickets/settings/teams", data={
        "name": "Support", "manager_id": "", "member_ids": [agent.id]}).status_code == 303
    with organization_context(ident(org)):
        assert services.business_hours() == {0: [(480, 720), (780, 1020)]}
        holiday = next(h for h in services.list_holidays(2030) if h.name == "Founders' day")
        assert any(t.name_en == "Installation" for t in services.list_types())
        assert any(k.keyword == "خربان" for k in services.list_keywords())
    assert client.post(f"/tickets/settings/holidays/{holiday.id}/rename",
                       data={"name": "Company day"}).status_code == 303
    assert client.post(f"/tickets/settings/holidays/{holiday.id}/remove").status_code == 303
    for url in ("/tickets/settings", "/tickets/settings/calendar", "/tickets/settings/types",
                "/tickets/settings/teams"):
        assert client.get(url).status_code == 200


def test_a_manager_reads_the_settings_but_cannot_change_them(client, org):
    login(client, make_user(org, "manager"))
    assert client.get("/tickets/settings").status_code == 200
    assert "/tickets/settings/policies" not in text_of(client.get("/tickets/settings")) or \
        'type="submit">' not in text_of(client.get("/tickets/settings"))
    assert client.post("/tickets/settings/general", data={"auto_close_days": "9"}
                       ).status_code == 403


def test_a_team_with_a_manager(client, org, admin):
    manager = make_user(org, "manager")
    team = make_team(org, name="Sales")
    assert client.post(f"/tickets/settings/teams/{team.id}", data={
        "name": "Sales", "manager_id": manager.id}).status_code == 303
    with organization_context(ident(org)):
        assert db.session.get(type(team), team.id).manager_id == manager.id


# -- notifications -----------------------------------------------------------------------------

def test_the_bell_counts_unread_notifications_and_the_list_marks_them_read(client, org):
    agent = make_user(org, "agent")
    login(client, agent)
    make_ticket(org, subject="For you", assignee_id=agent.id)
    assert 'class="unread-badge">١<' in text_of(client.get("/notifications/bell")) or \
        'class="unread-badge">1<' in text_of(client.get("/notifications/bell"))
    page = text_of(client.get("/notifications"))
    assert "For you" in page
    client.post("/notifications/read")
    with organization_context(ident(org)):
        assert notifications.unread_count(agent) == 0
    assert "unread-badge" not in text_of(client.get("/notifications/bell"))


def test_a_holiday_without_a_day_is_refused(client, org, admin):
    """A holiday form with no day answers 422 with the field's error, never a 500."""
    response = client.post("/tickets/settings/holidays", data={"name": "Founders' day"})
    assert response.status_code == 422
    assert arabic("Enter a date.") in text_of(response)


def test_closing_a_ticket_asks_first_and_is_final(client, org, admin):
    """The status list offers no "closed"; the close button asks, and a closed ticket shows
    no form any more."""
    ticket = make_ticket(org)
    page = text_of(client.get(f"/tickets/{ident(ticket)}"))
    fields = re.search(r'name="status">(.*?)</select>', page, re.S).group(1)
    assert 'value="closed"' not in fields
    assert arabic("Close ticket #%(number)s? A closed ticket cannot be changed again.",
                  number=reload_ticket(org, ticket).number) in page

    client.post(f"/tickets/{ident(ticket)}", data={
        "status": "closed", "version": reload_ticket(org, ticket).version})
    assert reload_ticket(org, ticket).status == "closed"
    assert "ticket-composer" not in text_of(client.get(f"/tickets/{ident(ticket)}"))
