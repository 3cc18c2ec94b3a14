"""An agent's day in the inbox, through the pages: starting chats, the unassigned queue, private
notes, labels, one-click status, saved replies, the composer's keys, and a teammate's reply
while one types."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from crm.campaigns import consent
from crm.campaigns.models import Campaign, CampaignRecipient
from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets import services as tickets
from crm.tickets.models import Ticket
from crm.whatsapp.models import CannedReply, Conversation, ConversationNote, Message
from tests.campaigns.factories import make_campaign
from tests.customers.factories import make_customer
from tests.factories import login, make_org, make_user
from tests.foundation import HTMX
from tests.tickets.factories import make_ticket
from tests.whatsapp.factories import (
    make_canned_reply,
    make_conversation,
    make_message,
    make_profile,
    page_text,
)


@pytest.fixture
def org():
    return make_org(language="en")


@pytest.fixture
def sandbox(org):
    return make_profile(org, "sandbox", display_name="Demo number")


@pytest.fixture
def agent(org):
    return make_user(org, "agent")


def _get(model, org_id: int, object_id: int):
    with organization_context(org_id):
        return db.session.get(model, object_id, populate_existing=True)


def _conversations(org_id: int) -> list[Conversation]:
    with organization_context(org_id):
        return list(db.session.scalars(select(Conversation).order_by(Conversation.id)
                                       .execution_options(populate_existing=True)))


def _count(org_id: int, model) -> int:
    with organization_context(org_id):
        return db.session.scalar(select(func.count()).select_from(model))


def _row_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="conversation-row-(\d+)"', html)]


# -- starting a chat ---------------------------------------------------------------------------

def test_a_new_chat_reads_any_written_phone_with_the_organizations_country(client, org, sandbox,
                                                                             agent):
    """A local number typed with spaces opens a conversation with its E.164 form, listed at
    the top and given to whoever started it; the same number again opens the same one."""
    login(client, agent)
    assert "New chat" in page_text(client, "/inbox")
    assert 'name="phone"' in page_text(client, "/inbox/new")

    response = client.post("/inbox/conversations", data={
        "profile_id": str(sandbox.id), "phone": "050 123 4567", "name": "Huda"})

    assert response.status_code == 303
    [conversation] = _conversations(org.id)
    assert response.headers["Location"] == f"/inbox/conversations/{conversation.id}"
    assert conversation.contact_phone == "+966501234567"
    assert conversation.contact_name == "Huda"
    assert conversation.assigned_user_id == agent.id
    assert _row_ids(page_text(client, "/inbox")) == [conversation.id]
    again = client.post("/inbox/conversations", data={"profile_id": str(sandbox.id),
                                                       "phone": "+966501234567"})
    assert again.headers["Location"] == f"/inbox/conversations/{conversation.id}"
    assert len(_conversations(org.id)) == 1


def test_a_new_chat_refuses_a_bad_number_and_another_agents_conversation(client, org, sandbox,
                                                                           agent):
    """A number that is no phone number, or a number of another organization, is a 422 on
    its field; an agent is told who already answers a number, and sees nothing of it."""
    colleague = make_user(org, "agent", full_name="Sara Q")
    theirs = make_conversation(sandbox, phone="+966501112233", assigned_user_id=colleague.id,
                               contact_name="Secret name")
    other_number_id = make_profile(make_org(), "sandbox").id
    login(client, agent)

    bad = client.post("/inbox/conversations", data={"profile_id": str(sandbox.id),
                                                     "phone": "12"}, headers=HTMX)
    assert bad.status_code == 422
    assert "Enter a valid phone number." in bad.get_data(as_text=True)
    foreign = client.post("/inbox/conversations", data={"profile_id": str(other_number_id),
                                                         "phone": "0501234567"}, headers=HTMX)
    assert foreign.status_code == 422
    assert "Choose one of your WhatsApp numbers." in foreign.get_data(as_text=True)
    taken = client.post("/inbox/conversations", data={"profile_id": str(sandbox.id),
                                                       "phone": "0501112233"}, headers=HTMX)
    assert taken.status_code == 409
    assert "Sara Q" in taken.get_data(as_text=True)
    assert "Secret name" not in taken.get_data(as_text=True)
    assert _get(Conversation, org.id, theirs.id).assigned_user_id == colleague.id


# -- the unassigned queue --------------------------------------------------------------------

def test_an_agent_takes_a_conversation_from_the_queue(client, org, sandbox, agent):
    """By default agents see the unassigned list and take a conversation in one click; a
    colleague who tries a moment later is told who took it."""
    waiting = make_conversation(sandbox, contact_name="Waiting")
    colleague = make_user(org, "agent")
    agent_id = agent.id
    login(client, agent)

    assert _row_ids(page_text(client, "/inbox?scope=unassigned")) == [waiting.id]
    assert "Take it" in page_text(client, f"/inbox/conversations/{waiting.id}")
    taken = client.post(f"/inbox/conversations/{waiting.id}/take", headers=HTMX)

    assert taken.status_code == 200
    assert _get(Conversation, org.id, waiting.id).assigned_user_id == agent_id
    assert _row_ids(page_text(client, "/inbox?scope=unassigned")) == []
    assert _row_ids(page_text(client, "/inbox")) == [waiting.id]
    login(client, colleague)
    assert client.get(f"/inbox/conversations/{waiting.id}").status_code == 404
    refused = client.post(f"/inbox/conversations/{waiting.id}/take", headers=HTMX)
    assert refused.status_code == 404  # it is not in the queue any more


def test_the_queue_is_closed_to_agents_when_the_admin_says_so(client, org, sandbox, agent):
    """An admin turns the queue off on the inbox settings: agents then see and take nothing
    unassigned; others see the setting but cannot change it."""
    waiting = make_conversation(sandbox)
    manager = make_user(org, "manager")
    login(client, manager)
    assert "Agents see the unassigned conversations" in page_text(client, "/inbox/settings")
    assert client.post("/inbox/settings", data={}).status_code == 403
    login(client, org.admin)

    assert client.post("/inbox/settings", data={}).status_code == 303

    login(client, agent)
    assert _row_ids(page_text(client, "/inbox?scope=unassigned")) == []
    assert client.post(f"/inbox/conversations/{waiting.id}/take").status_code == 404
    assert "segmented" not in page_text(client, "/inbox")


def test_new_numbers_give_conversations_to_online_agents_by_default(client, org):
    """A number added without saying otherwise auto-assigns; the checkbox turns it off."""
    login(client, org.admin)
    form = {"provider": "web", "display_name": "Front desk", "auto_assign_shown": "1"}
    client.post("/whatsapp/numbers", data={**form, "auto_assign": "on"})
    client.post("/whatsapp/numbers", data={**form, "display_name": "Back office"})
    client.post("/whatsapp/numbers", data={"provider": "sandbox"})

    from tests.whatsapp.factories import profiles_of

    numbers = {profile.display_name: profile.auto_assign for profile in profiles_of(org.id)}
    assert numbers == {"Front desk": True, "Back office": False, "Sandbox": True}
    assert 'id="web-auto_assign" name="auto_assign" type="checkbox" checked' in page_text(
        client, "/whatsapp/numbers")


# -- inbox basics ----------------------------------------------------------------------------

def test_a_private_note_stays_with_the_team(client, org, sandbox, agent):
    """A note shows in the panel with its author and is never a message to the contact."""
    conversation = make_conversation(sandbox, assigned_user_id=agent.id)
    login(client, agent)

    response = client.post(f"/inbox/conversations/{conversation.id}/notes",
                           data={"note": "Asked for a refund twice"}, headers=HTMX)

    assert response.status_code == 200
    assert "Asked for a refund twice" in response.get_data(as_text=True)
    assert _count(org.id, ConversationNote) == 1
    assert _count(org.id, Message) == 0
    empty = client.post(f"/inbox/conversations/{conversation.id}/notes", data={"note": " "},
                        headers=HTMX)
    assert empty.status_code == 422
    assert "Write the note first." in empty.get_data(as_text=True)


def test_labels_are_set_from_the_panel_and_shown_on_the_row(client, org, sandbox, agent):
    """Labels are comma-separated (Arabic commas too), kept once each, shown on the row."""
    conversation = make_conversation(sandbox, assigned_user_id=agent.id)
    login(client, agent)

    client.post(f"/inbox/conversations/{conversation.id}/labels",
                data={"labels": "VIP، refund, vip"}, headers=HTMX)

    assert _get(Conversation, org.id, conversation.id).labels == ["VIP", "refund"]
    assert '<span class="chip" dir="auto">refund</span>' in page_text(client, "/inbox")
    too_long = client.post(f"/inbox/conversations/{conversation.id}/labels",
                           data={"labels": "x" * 41}, headers=HTMX)
    assert too_long.status_code == 422


def test_assign_and_status_change_in_one_click(client, org, sandbox, agent):
    """The panel sends the assignee as soon as it is chosen (no separate button unless
    JavaScript is off), offers each status as a button, and the header resolves and reopens."""
    conversation = make_conversation(sandbox, assigned_user_id=agent.id)
    login(client, agent)
    html = page_text(client, f"/inbox/conversations/{conversation.id}")

    assert 'hx-trigger="change, submit"' in html
    assert '<noscript><button type="submit" class="secondary">Assign</button></noscript>' in html
    for status in ("open", "pending", "resolved"):
        assert f'name="status" value="{status}"' in html
    resolved = client.post(f"/inbox/conversations/{conversation.id}/status",
                           data={"status": "resolved"}, headers=HTMX)
    assert 'value="open" class="secondary">Reopen' in resolved.get_data(as_text=True)
    assert _get(Conversation, org.id, conversation.id).status == "resolved"


# -- the composer ----------------------------------------------------------------------------

def test_saved_replies_are_kept_by_admins_and_filled_in_for_the_contact(client, org, sandbox,
                                                                         agent):
    """An admin saves replies in both languages; typing /tha in the composer offers the
    matching ones with {name} filled in; read-only members cannot manage them."""
    admin = make_user(org, "admin", full_name="Mona")
    conversation = make_conversation(sandbox, assigned_user_id=agent.id, contact_name="Huda")
    login(client, admin)
    for shortcut, language, body in (("thanks", "en", "Thank you {name}!"),
                                     ("thanks", "ar", "شكرًا {name}"),
                                     ("hours", "en", "We open at nine.")):
        assert client.post("/inbox/replies", data={"shortcut": shortcut, "language": language,
                                                   "body": body}).status_code == 303
    duplicate = client.post("/inbox/replies", data={"shortcut": "thanks", "language": "en",
                                                    "body": "Again"})
    assert duplicate.status_code == 422
    login(client, make_user(org, "member"))
    assert client.get("/inbox/settings").status_code == 403
    assert client.post("/inbox/replies", data={"shortcut": "x", "language": "en",
                                               "body": "x"}).status_code == 403
    login(client, agent)

    menu = page_text(client, f"/inbox/conversations/{conversation.id}/replies?q=tha")

    assert 'data-text="Thank you Huda!"' in menu
    assert 'data-text="شكرًا Huda"' in menu
    assert '<span class="reply-language">Arabic</span>' in menu  # in words, not «ar»
    assert "nine" not in menu
    assert _count(org.id, CannedReply) == 3


@pytest.mark.parametrize("role", ["agent", "manager"])
def test_only_admins_change_saved_replies_the_others_read_them(client, org, role):
    """Agents and managers use the saved replies: the settings page lists them read-only,
    and a direct post to add, change or delete one is refused and changes nothing."""
    reply = make_canned_reply(org, "hours", "en", "We open at nine.")
    login(client, make_user(org, role))

    listing = page_text(client, "/inbox/settings")

    assert "We open at nine." in listing
    assert f'action="/inbox/replies/{reply.id}"' not in listing
    assert f'/inbox/replies/{reply.id}/delete' not in listing
    assert 'action="/inbox/replies"' not in listing
    for url, data in (("/inbox/replies", {"shortcut": "new", "language": "en", "body": "x"}),
                      (f"/inbox/replies/{reply.id}", {"shortcut": "changed", "language": "ar",
                                                       "body": "Changed"}),
                      (f"/inbox/replies/{reply.id}/delete", {})):
        assert client.post(url, data=data).status_code == 403
        assert client.post(url, data=data, headers=HTMX).status_code == 403
    kept = _get(CannedReply, org.id, reply.id)
    assert (kept.shortcut, kept.language, kept.body) == ("hours", "en", "We open at nine.")
    assert _count(org.id, CannedReply) == 1


@pytest.mark.parametrize(("role", "offered"), [("agent", False), ("admin", True)])
def test_the_slash_menu_offers_to_add_replies_only_to_those_who_may(client, org, sandbox,
                                                                    role, offered):
    """No reply matches: the `/` menu says so, and links to adding one only for admins."""
    user = make_user(org, role)
    conversation = make_conversation(sandbox, assigned_user_id=user.id)
    login(client, user)

    menu = page_text(client, f"/inbox/conversations/{conversation.id}/replies?q=nothing")

    assert "No saved reply matches." in menu
    assert ('href="/inbox/settings"' in menu) is offered


def test_enter_sends_unless_the_agent_swaps_the_keys(client, org, sandbox, agent):
    """The composer says Enter sends; swapping keeps what was typed and is remembered."""
    conversation = make_conversation(sandbox, assigned_user_id=agent.id)
    login(client, agent)
    assert 'data-enter-sends="1"' in page_text(client, f"/inbox/conversations/{conversation.id}")

    swapped = client.post("/inbox/preferences", data={
        "enter_sends": "0", "conversation_id": str(conversation.id), "text": "Half a thought"},
        headers=HTMX)

    assert 'data-enter-sends="0"' in swapped.get_data(as_text=True)
    assert "Half a thought" in swapped.get_data(as_text=True)
    assert 'data-enter-sends="0"' in page_text(client, f"/inbox/conversations/{conversation.id}")


def test_sending_asks_first_when_a_teammate_replied_meanwhile(client, org, sandbox, agent):
    """The composer knows the newest message when it opened: a teammate's reply since makes
    the send a 409 that names them and keeps the text; sending anyway sends it."""
    conversation = make_conversation(sandbox, assigned_user_id=agent.id)
    make_message(conversation)
    login(client, agent)
    html = page_text(client, f"/inbox/conversations/{conversation.id}")
    seen = re.search(r'name="seen_id" value="(\d+)"', html).group(1)
    manager = make_user(org, "manager", full_name="Sara")
    make_message(conversation, "out", sender_user_id=manager.id, body="I am on it")

    asked = client.post(f"/inbox/conversations/{conversation.id}/messages",
                        data={"text": "Hello!", "seen_id": seen}, headers=HTMX)

    assert asked.status_code == 409
    assert "<bdi>Sara</bdi> replied while you were typing." in asked.get_data(as_text=True)
    assert "Hello!" in asked.get_data(as_text=True)
    assert _count(org.id, Message) == 2
    sent = client.post(f"/inbox/conversations/{conversation.id}/messages",
                       data={"text": "Hello!", "seen_id": seen, "confirm_send": "1"},
                       headers=HTMX)
    assert sent.status_code == 200
    assert _count(org.id, Message) == 3


# -- the customer beside the chat: tickets and campaigns ------------------------------------

def _customer_in_conversation(org, sandbox):
    """A customer with a conversation, a ticket opened from it and one opened by phone."""
    customer = make_customer(org, name="Huda", phone="0501234567")
    conversation = make_conversation(sandbox, "+966501234567", customer_id=customer.id)
    from_chat = make_ticket(org, subject="Broken lid", conversation_id=conversation.id)
    by_phone = make_ticket(org, subject="Invoice by phone", customer_id=customer.id)
    solved = make_ticket(org, subject="Old question", customer_id=customer.id)
    with organization_context(org.id):
        tickets.update_ticket(org.admin, db.session.get(Ticket, solved.id), {"status": "solved"})
        db.session.flush()
    return customer, conversation, from_chat, by_phone


def test_the_panel_lists_the_customers_open_tickets_beside_the_conversations(client, org,
                                                                            sandbox):
    """The panel's tickets section: the conversation's tickets, then the customer's other
    open tickets (a solved one is not among them)."""
    _customer, conversation, from_chat, by_phone = _customer_in_conversation(org, sandbox)
    login(client, org.admin)
    assert f"/tickets/conversations/{conversation.id}" in page_text(
        client, f"/inbox/conversations/{conversation.id}")

    section = page_text(client, f"/tickets/conversations/{conversation.id}", headers=HTMX)
    own, others = section.split('id="conversation-' f'{conversation.id}-customer-tickets"')
    assert f'href="/tickets/{from_chat.id}"' in own
    assert f'href="/tickets/{by_phone.id}"' in others
    assert "Old question" not in section


def _sent_campaign(org, sandbox, phone: str, name: str, state: str = "read"):
    """A completed campaign whose message to `phone` reached `state`."""
    campaign = make_campaign(org, sandbox, name=name)
    with organization_context(org.id):
        db.session.get(Campaign, campaign.id).status = "completed"
        db.session.add(CampaignRecipient(organization_id=org.id, campaign_id=campaign.id,
                                         phone=phone, state=state, sent_at=utcnow()))
        db.session.flush()
    return campaign


def test_the_panel_shows_campaign_consent_and_the_last_campaign_messages(client, org,
                                                                        sandbox, agent):
    """Managers see whether the contact receives campaigns (the customer page's consent
    card) and the campaigns last sent to them; an agent's panel shows no campaigns."""
    customer, conversation, _chat, _phone = _customer_in_conversation(org, sandbox)
    campaign = _sent_campaign(org, sandbox, "+966501234567", "Spring sale")
    _sent_campaign(org, sandbox, "+966509999999", "Someone else's")
    login(client, make_user(org, "manager"))
    panel = page_text(client, f"/inbox/conversations/{conversation.id}")
    url = f"/campaigns/conversations/{conversation.id}"
    assert f'hx-get="{url}"' in panel

    section = page_text(client, url, headers=HTMX)
    assert 'class="badge on consent-state"' in section
    assert f'href="/campaigns/{campaign.id}"' in section
    assert "Spring sale" in section
    assert "Someone else" not in section
    with organization_context(org.id):
        consent.record("opt_out", "+966501234567", method="keyword", customer_id=customer.id,
                       text="STOP")
        db.session.flush()
    assert 'class="badge off consent-state"' in page_text(client, url, headers=HTMX)

    login(client, agent)
    with organization_context(org.id):
        db.session.get(Conversation, conversation.id).assigned_user_id = agent.id
        db.session.flush()
    nothing = page_text(client, url, headers=HTMX)
    assert f'id="conversation-{conversation.id}-campaigns"' not in nothing
    assert "consent-state" not in nothing
