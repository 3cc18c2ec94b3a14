"""The customer beside the chat: the CRM's card in the inbox's contact panel (who may see and
do what), the customer page's WhatsApp button, and the timeline's groups of messages."""

from __future__ import annotations

import re
from datetime import date

import pytest
from babel.dates import format_date
from sqlalchemy import select

from crm.customers.models import Customer, CustomerActivity
from crm.customers.services import list_stages
from crm.extensions import db
from crm.foundation import services as foundation
from crm.i18n import DATE_PATTERN
from crm.tenancy import organization_context
from crm.whatsapp.models import Conversation
from tests.customers.factories import make_customer, make_message_activity
from tests.factories import login, make_org, make_user
from tests.foundation import HTMX
from tests.whatsapp.factories import make_conversation, make_profile, page_text


@pytest.fixture
def org():
    return make_org(language="en")


@pytest.fixture
def sandbox(org):
    return make_profile(org, "sandbox", display_name="Demo number")


@pytest.fixture
def customer(org):
    return make_customer(org, name="Huda Salem", phone="+966501234567", tags=["VIP"],
                         notes="Prefers mornings")


def _linked(sandbox, customer, **fields) -> Conversation:
    return make_conversation(sandbox, phone=customer.phone, customer_id=customer.id, **fields)


def _get(model, org_id: int, object_id: int):
    with organization_context(org_id):
        return db.session.get(model, object_id, populate_existing=True)


def _activities(org_id: int, customer_id: int) -> list[CustomerActivity]:
    with organization_context(org_id):
        return list(db.session.scalars(select(CustomerActivity).where(
            CustomerActivity.customer_id == customer_id).order_by(CustomerActivity.id)))


def _stage_ids(org_id: int) -> list[int]:
    with organization_context(org_id):
        return [stage.id for stage in list_stages()]


def test_the_panel_loads_the_card_of_the_linked_customer(client, org, sandbox, customer):
    """The panel holds the CRM's placeholder; the card shows the name, stage, owner, score
    with its reasons, tags, notes and the latest activity."""
    conversation = _linked(sandbox, customer)
    login(client, org.admin)

    panel = page_text(client, f"/inbox/conversations/{conversation.id}")
    assert f'id="conversation-{conversation.id}-customer-{customer.id}"' in panel
    assert f'hx-get="/customers/conversations/{conversation.id}/card"' in panel
    card = page_text(client, f"/customers/conversations/{conversation.id}/card", headers=HTMX)

    for shown in ("Huda Salem", "VIP", "Prefers mornings", "Lead score", "Created",
                  'name="stage_id"', "Edit the customer"):
        assert shown in card, shown


def test_a_manager_moves_the_customer_to_another_stage_from_the_inbox(client, org, sandbox,
                                                                      customer):
    """Choosing a stage in the card moves the customer (logged on their timeline)."""
    conversation = _linked(sandbox, customer)
    target = _stage_ids(org.id)[2]
    manager = make_user(org, "manager")
    login(client, manager)

    response = client.post(f"/customers/conversations/{conversation.id}/stage",
                           data={"stage_id": str(target)}, headers=HTMX)

    assert response.status_code == 200
    assert _get(Customer, org.id, customer.id).stage_id == target
    assert [a.type for a in _activities(org.id, customer.id)][-1] == "stage_changed"
    assert re.search(rf'<option value="{target}" dir="auto" selected>',
                     response.get_data(as_text=True))


def test_a_manager_edits_the_customer_from_the_inbox(client, org, sandbox, customer):
    """Name, tags and notes are saved from the card; tags others added meanwhile stay."""
    conversation = _linked(sandbox, customer)
    login(client, org.admin)

    response = client.post(f"/customers/conversations/{conversation.id}/details", data={
        "name": "Huda S.", "owner_id": "", "notes": "Call after 10", "tags": "VIP, Riyadh",
        "shown_tags": "VIP", "version": str(customer.version)}, headers=HTMX)

    assert response.status_code == 200
    saved = _get(Customer, org.id, customer.id)
    assert (saved.name, saved.tags, saved.notes) == ("Huda S.", ["VIP", "Riyadh"],
                                                     "Call after 10")


def test_an_agent_logs_on_the_customer_of_their_conversation_but_does_not_edit_them(
        client, org, sandbox, customer):
    """On a conversation assigned to them an agent adds a note, a call or a task; the stage
    and details stay with managers (403), and another agent's conversation answers 404."""
    agent = make_user(org, "agent")
    mine = _linked(sandbox, customer, assigned_user_id=agent.id)
    theirs = make_conversation(sandbox, customer_id=customer.id,
                               assigned_user_id=make_user(org, "agent").id)
    login(client, agent)

    card = page_text(client, f"/customers/conversations/{mine.id}/card", headers=HTMX)
    assert 'name="stage_id"' not in card
    assert "Edit the customer" not in card
    assert "Log on the customer" in card
    logged = client.post(f"/customers/conversations/{mine.id}/activities",
                         data={"type": "call", "body": "Called about the order"}, headers=HTMX)

    assert logged.status_code == 200
    assert "Called about the order" in logged.get_data(as_text=True)
    assert _activities(org.id, customer.id)[-1].type == "call"
    assert client.post(f"/customers/conversations/{mine.id}/stage",
                       data={"stage_id": str(_stage_ids(org.id)[1])}).status_code == 403
    assert client.get(f"/customers/conversations/{theirs.id}/card").status_code == 404
    assert client.post(f"/customers/conversations/{theirs.id}/activities",
                       data={"type": "note", "body": "x"}).status_code == 404
    meeting = client.post(f"/customers/conversations/{mine.id}/activities",
                          data={"type": "meeting", "body": "x"}, headers=HTMX)
    assert meeting.status_code == 422


def test_a_contact_without_a_customer_becomes_one_from_the_panel(client, org, sandbox):
    """The card offers to create the customer, filled in from the contact; creating links
    the conversation. An agent is not offered it."""
    conversation = make_conversation(sandbox, phone="+966507654321", contact_name="Omar")
    agent = make_user(org, "agent")
    login(client, agent)
    assert "Create customer" not in page_text(
        client, f"/customers/conversations/{conversation.id}/card", headers=HTMX)
    login(client, org.admin)
    card = page_text(client, f"/customers/conversations/{conversation.id}/card", headers=HTMX)
    assert 'value="Omar"' in card
    assert 'value="+966507654321"' in card

    created = client.post(f"/customers/conversations/{conversation.id}/customer",
                          data={"name": "Omar", "phone": "+966507654321"}, headers=HTMX)

    assert created.status_code == 200
    linked = _get(Conversation, org.id, conversation.id).customer_id
    assert _get(Customer, org.id, linked).name == "Omar"


def test_the_card_is_not_in_the_panel_when_the_crm_is_off(client, org, sandbox, customer):
    conversation = _linked(sandbox, customer)
    with organization_context(org.id):
        foundation.set_module_enabled(org.admin, "crm", False)
    login(client, org.admin)
    assert "/card" not in page_text(client, f"/inbox/conversations/{conversation.id}")


def test_a_customer_added_by_hand_is_messaged_from_their_page(client, org, sandbox, customer):
    """The WhatsApp button starts the conversation with the customer's number and links it to
    them; the page then opens that conversation."""
    login(client, org.admin)
    page = page_text(client, f"/customers/{customer.id}")
    assert "Message on WhatsApp" in page

    started = client.post("/inbox/conversations", data={
        "profile_id": str(sandbox.id), "phone": customer.phone, "name": customer.name})

    with organization_context(org.id):
        conversation = db.session.scalar(select(Conversation))
    assert started.headers["Location"] == f"/inbox/conversations/{conversation.id}"
    assert conversation.customer_id == customer.id
    assert "Open the WhatsApp chat" in page_text(client, f"/customers/{customer.id}")


def test_whatsapp_messages_are_grouped_per_conversation_and_day(client, org, sandbox, customer):
    """A run of a conversation's messages is one entry that opens; a note between two runs
    keeps them apart."""
    conversation = _linked(sandbox, customer)
    for text in ("one", "two", "three"):
        make_message_activity(org, customer, conversation, body=text)
    login(client, org.admin)
    client.post(f"/customers/{customer.id}/activities", data={"type": "note", "body": "Noted"})
    make_message_activity(org, customer, conversation, body="four")

    html = page_text(client, f"/customers/{customer.id}")

    assert html.count('class="activity timeline-group"') == 1
    assert "3 WhatsApp messages" in html
    assert html.index("four") < html.index("Noted") < html.index("3 WhatsApp messages")


def test_a_group_of_messages_is_dated_as_the_timeline_dates_its_entries(client, org, sandbox,
                                                                         customer):
    """In Arabic the group «٣ رسائل على واتساب» names its day with the month's name, as every
    entry around it does, never in digits that read day/month or month/day."""
    conversation = _linked(sandbox, customer)
    for text in ("one", "two", "three"):
        make_message_activity(org, customer, conversation, body=text)
    login(client, make_user(org, "admin", language="ar"))

    html = page_text(client, f"/customers/{customer.id}")

    group = html.split('class="activity timeline-group"')[1].split("</summary>")[0]
    day = date.fromisoformat(re.search(r'<time class="muted" datetime="([^"]+)"', group)[1])
    assert f">{format_date(day, DATE_PATTERN, locale='ar')}</time>" in group, group


def test_the_cards_owner_list_keeps_an_owner_who_left_the_team(client, org, sandbox):
    """The card's owner field offers the customer's owner who has since left the team, chosen,
    so that saving the card's other fields does not drop them."""
    leaver = make_user(org, role="agent", full_name="Samir Left")
    customer = make_customer(org, name="Owned", owner_id=leaver.id)
    conversation = _linked(sandbox, customer)
    with organization_context(org.id):
        foundation.remove_user(org.admin, leaver)
        db.session.flush()
    login(client, org.admin)
    card = page_text(client, f"/customers/conversations/{conversation.id}/card", headers=HTMX)
    owners = card.split('name="owner_id"')[1].split("</select>")[0]
    assert re.search(rf'<option value="{leaver.id}"[^>]*selected[^>]*>Samir Left '
                     r"\(no longer in the team\)</option>", owners), owners
