"""Ticketing between modules: the CRM hears of tickets; a customer's WhatsApp message suggests
a ticket, or goes on the tickets of its conversation (reopening a solved one); merged
customers keep their tickets. Each works with the other modules switched off."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.customers import services as crm
from crm.customers.models import CustomerActivity
from crm.extensions import db
from crm.foundation.services import set_module_enabled
from crm.tenancy import organization_context
from crm.tickets import events as ticket_events
from crm.tickets import services
from crm.whatsapp import sandbox
from tests.customers.factories import make_customer
from tests.factories import run_jobs
from tests.foundation import ident
from tests.tickets.factories import acting_as, make_ticket, reload_ticket
from tests.whatsapp.factories import make_profile

PHONE = "+966551234567"


@pytest.fixture
def profile(org):
    return make_profile(org, "sandbox")


def customer_writes(app, org, profile, text: str, phone: str = PHONE):
    """The sandbox customer sends `text`; the ingest and every subscriber run."""
    with organization_context(ident(org)):
        message = sandbox.customer_sends(profile, phone, "Fatima", text)
        db.session.flush()
        ids = (message.id, message.conversation_id)
    run_jobs(app)
    return ids


def _suggestion(org, conversation_id: int):
    with organization_context(ident(org)):
        return services.suggestion_for(conversation_id)


def _activities(org, customer) -> list[str]:
    with organization_context(ident(org)):
        return list(db.session.scalars(select(CustomerActivity.type).where(
            CustomerActivity.customer_id == ident(customer)).order_by(CustomerActivity.id)))


def test_the_crm_timeline_hears_of_opened_and_closed_tickets(app, org):
    customer = make_customer(org)
    ticket = make_ticket(org, customer_id=customer.id, subject="Broken screen")
    run_jobs(app)
    with acting_as(org):
        services.update_ticket(org.admin, ticket, {"status": "closed"})
    run_jobs(app)
    assert _activities(org, customer)[-2:] == ["ticket_opened", "ticket_closed"]
    with organization_context(ident(org)):
        body = db.session.scalar(select(CustomerActivity.body).where(
            CustomerActivity.type == "ticket_opened"))
    assert body == "Broken screen"


def test_with_the_crm_off_tickets_open_and_the_crm_logs_nothing(app, org):
    customer = make_customer(org)
    with acting_as(org):
        set_module_enabled(org.admin, "crm", False)
    make_ticket(org, customer_id=customer.id)
    run_jobs(app)
    assert "ticket_opened" not in _activities(org, customer)


def test_a_message_with_a_keyword_suggests_a_ticket_with_letter_variants_folded(app, org,
                                                                                 profile):
    """«مشكله» (with ه) matches the keyword «مشكلة» (with ة): the conversation shows the
    suggestion with its fields filled in, and no ticket is made."""
    message_id, conversation_id = customer_writes(app, org, profile,
                                                  "عندي مشكله في الطلب\nرقم ٥٥")
    suggestion = _suggestion(org, conversation_id)
    assert suggestion.keyword == "مشكلة"
    assert (suggestion.subject, suggestion.description) == ("عندي مشكله في الطلب",
                                                            "عندي مشكله في الطلب\nرقم ٥٥")
    assert suggestion.message_id == message_id
    with organization_context(ident(org)):
        assert services.list_tickets(org.admin, services.parse_filters({}))[0] == []


def test_english_keywords_match_whole_words(app, org, profile):
    _message, conversation_id = customer_writes(app, org, profile, "My order arrived BROKEN")
    assert _suggestion(org, conversation_id).keyword == "broken"
    _message, other = customer_writes(app, org, profile, "Thanks, I need a tissue box",
                                      phone="+966551234568")
    assert _suggestion(org, other) is None


def test_a_dismissed_suggestion_comes_back_with_the_next_keyword(app, org, profile):
    _message, conversation_id = customer_writes(app, org, profile, "عطل في الجهاز")
    with acting_as(org):
        services.dismiss_suggestion(org.admin, services.suggestion_for(conversation_id))
    assert _suggestion(org, conversation_id) is None
    customer_writes(app, org, profile, "ما زال لا يعمل")
    assert _suggestion(org, conversation_id).keyword == "لا يعمل"


def test_opening_the_ticket_clears_the_suggestion(app, org, profile):
    _message, conversation_id = customer_writes(app, org, profile, "problem with my bill")
    make_ticket(org, subject=None, conversation_id=conversation_id, source="whatsapp")
    assert _suggestion(org, conversation_id) is None


def test_with_ticketing_off_nothing_is_suggested(app, org, profile):
    with acting_as(org):
        set_module_enabled(org.admin, "ticketing", False)
    _message, conversation_id = customer_writes(app, org, profile, "مشكلة كبيرة")
    assert _suggestion(org, conversation_id) is None


def test_the_customer_s_answer_reopens_a_solved_ticket_once(app, org, profile):
    """A solved ticket of the conversation reopens; the message is on its timeline once,
    however often the event is delivered; no suggestion while a ticket is there."""
    _message, conversation_id = customer_writes(app, org, profile, "Hello")
    ticket = make_ticket(org, conversation_id=conversation_id)
    with acting_as(org):
        services.add_comment(org.admin, ticket, "Fixed, please check", public=True)
        services.update_ticket(org.admin, ticket, {"status": "solved"})
    run_jobs(app)
    message_id, _conversation = customer_writes(app, org, profile, "still a problem, sorry")
    reopened = reload_ticket(org, ticket)
    assert reopened.status == "open"
    assert reopened.solved_at is None
    assert reopened.next_response_started_at is not None  # its next-response clock runs
    payload = {"message_id": message_id, "conversation_id": conversation_id,
               "direction": "in", "body": "still a problem, sorry", "customer_id": None}
    with organization_context(ident(org)):
        ticket_events.message_received(payload)  # delivered again
        timeline = [e.kind for e in services.list_timeline(reopened)[0]]
    assert timeline.count("customer_message") == 1
    assert timeline[:2] == ["updated", "customer_message"]
    assert _suggestion(org, conversation_id) is None


def test_the_customer_s_answer_brings_a_pending_ticket_back(app, org, profile):
    _message, conversation_id = customer_writes(app, org, profile, "Hi")
    ticket = make_ticket(org, conversation_id=conversation_id)
    with acting_as(org):
        services.update_ticket(org.admin, ticket, {"status": "pending"})
    run_jobs(app)
    customer_writes(app, org, profile, "Here is the photo you asked for")
    ticket = reload_ticket(org, ticket)
    assert ticket.status == "open"
    assert not ticket.is_paused


def test_a_closed_ticket_stays_closed_and_a_new_suggestion_comes(app, org, profile):
    _message, conversation_id = customer_writes(app, org, profile, "Hi")
    ticket = make_ticket(org, conversation_id=conversation_id)
    with acting_as(org):
        services.update_ticket(org.admin, ticket, {"status": "closed"})
    run_jobs(app)
    customer_writes(app, org, profile, "refund please")
    assert reload_ticket(org, ticket).status == "closed"
    assert _suggestion(org, conversation_id).keyword == "refund"


def test_merged_customers_keep_their_tickets(app, org):
    survivor, duplicate = make_customer(org), make_customer(org)
    ticket = make_ticket(org, customer_id=duplicate.id)
    with acting_as(org):
        crm.merge_customers(org.admin, crm.access_customer(ident(survivor)),
                            crm.access_customer(ident(duplicate)))
    run_jobs(app)
    assert reload_ticket(org, ticket).customer_id == ident(survivor)


def test_a_deleted_customer_s_tickets_stay_without_one(app, org):
    customer = make_customer(org)
    ticket = make_ticket(org, customer_id=customer.id)
    with acting_as(org):
        crm.delete_customer(org.admin, crm.access_customer(ident(customer)))
    run_jobs(app)
    assert reload_ticket(org, ticket).customer_id is None


def test_a_conversation_of_another_number_is_its_own(app, org, profile):
    """Tickets follow their own conversation only: another contact's message touches none."""
    _message, conversation_id = customer_writes(app, org, profile, "Hi")
    ticket = make_ticket(org, conversation_id=conversation_id)
    customer_writes(app, org, profile, "Hello there", phone="+966551234599")
    with organization_context(ident(org)):
        kinds = [e.kind for e in services.list_timeline(reload_ticket(org, ticket))[0]]
    assert "customer_message" not in kinds
