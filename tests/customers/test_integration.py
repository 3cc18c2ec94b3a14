"""The CRM fed by WhatsApp through events, and the CRM on its own.

Messages come in through the real ingest path (crm.whatsapp.sandbox.customer_sends →
services.receive_inbound), which publishes message.received; the commit delivers it to the
CRM's subscriber, as in production.
"""

from __future__ import annotations

import pytest
from flask import current_app
from sqlalchemy import func, select

from crm import events
from crm.customers import services
from crm.customers.models import Customer, CustomerActivity
from crm.extensions import db
from crm.foundation import services as foundation
from crm.tenancy import organization_context
from crm.whatsapp import profiles, sandbox
from crm.whatsapp import services as whatsapp
from crm.whatsapp.models import Conversation, Message
from tests.customers.factories import make_customer
from tests.factories import bearer, login, run_jobs
from tests.foundation import ident
from tests.whatsapp.factories import make_profile


@pytest.fixture
def profile(org):
    return make_profile(org, "sandbox", phone_number="+966500000999")


def _customer_sends(org_id: int, profile_id: int, phone: str, name: str, text: str) -> Message:
    """The simulated customer writes; the commit delivers message.received."""
    with organization_context(org_id):
        message = sandbox.customer_sends(profiles.access_profile(profile_id), phone, name, text)
        message_id, conversation_id = message.id, message.conversation_id
        db.session.flush()
    _delivered()
    with organization_context(org_id):
        return db.session.get(Message, message_id, populate_existing=True), conversation_id


def _delivered() -> None:
    """Commit, then run the CRM's reactions (job subscribers) as a worker would."""
    run_jobs(current_app._get_current_object(), queues=("default",))


def _customers(org_id: int) -> list[Customer]:
    with organization_context(org_id):
        return list(db.session.scalars(select(Customer).where(Customer.merged_into_id.is_(None))
                                       .execution_options(populate_existing=True)))


def _activities(org_id: int, customer_id: int, type_: str) -> list[CustomerActivity]:
    with organization_context(org_id):
        return list(db.session.scalars(select(CustomerActivity).where(
            CustomerActivity.customer_id == customer_id, CustomerActivity.type == type_)))


def _conversation(org_id: int, conversation_id: int) -> Conversation:
    with organization_context(org_id):
        return db.session.get(Conversation, conversation_id, populate_existing=True)


def test_an_unknown_number_becomes_a_customer_with_the_conversation_linked(org, profile):
    """The first message from a new number creates the customer (named from the WhatsApp
    profile, source whatsapp), links the conversation, logs the message, counts as contact
    and scores."""
    org_id, profile_id = ident(org), ident(profile)
    _message, conversation_id = _customer_sends(org_id, profile_id, "0501234567", "خالد",
                                                "السلام عليكم")

    [customer] = _customers(org_id)
    assert (customer.name, customer.phone, customer.source) == ("خالد", "+966501234567",
                                                               "whatsapp")
    assert customer.last_contacted_at is not None
    assert customer.score >= 20  # replied on WhatsApp in the last 7 days
    assert _conversation(org_id, conversation_id).customer_id == customer.id
    [logged] = _activities(org_id, customer.id, "whatsapp_in")
    assert logged.body == "السلام عليكم"
    assert logged.data["conversation_id"] == conversation_id
    with organization_context(org_id):
        assert services.whatsapp_conversation_id(customer) == conversation_id


def test_a_known_number_logs_the_message_on_the_existing_customer(org, profile):
    """A customer saved with the number (written another way) gets the activity and a fresh
    last contact; no second customer appears; the conversation is linked to them."""
    existing = make_customer(org, name="Known", phone="+966 55 000 0001")
    org_id, existing_id, profile_id = ident(org), existing.id, ident(profile)

    _customer_sends(org_id, profile_id, "٠٥٥٠٠٠٠٠٠١", "Profile name", "hello")
    _message, conversation_id = _customer_sends(org_id, profile_id, "0550000001", "", "again")

    assert [c.id for c in _customers(org_id)] == [existing_id]
    assert _customers(org_id)[0].name == "Known"
    assert _customers(org_id)[0].last_contacted_at is not None
    assert len(_activities(org_id, existing_id, "whatsapp_in")) == 2
    assert _conversation(org_id, conversation_id).customer_id == existing_id


def test_a_redelivered_event_logs_nothing_twice(org, profile):
    """The same message.received delivered again (a retried job, a replayed event) adds no
    activity and no customer."""
    org_id, profile_id = ident(org), ident(profile)
    message, conversation_id = _customer_sends(org_id, profile_id, "0501112222", "Nada", "hi")
    with organization_context(org_id):
        payload = whatsapp.message_payload(message, _conversation(org_id, conversation_id))
        events.publish("message.received", payload)
    _delivered()

    [customer] = _customers(org_id)
    assert len(_activities(org_id, customer.id, "whatsapp_in")) == 1


def test_a_message_sent_to_a_linked_conversation_is_logged(app, org, profile):
    org_id, profile_id = ident(org), ident(profile)
    _message, conversation_id = _customer_sends(org_id, profile_id, "0503334444", "Reem", "hi")
    with organization_context(org_id):
        conversation = db.session.get(Conversation, conversation_id)
        whatsapp.send_text(conversation, org.admin, "Welcome!")
        db.session.flush()
    run_jobs(app, queues=("whatsapp", "default"))

    [customer] = _customers(org_id)
    [sent] = _activities(org_id, customer.id, "whatsapp_out")
    assert sent.body == "Welcome!"


def test_merging_and_deleting_customers_relink_their_conversations(org, profile):
    """customer.merged moves the duplicate's conversation to the survivor; customer.deleted
    detaches it; a later message then finds or creates the customer again."""
    org_id, profile_id = ident(org), ident(profile)
    _message, conversation_id = _customer_sends(org_id, profile_id, "0505556666", "Dup", "hi")
    [duplicate] = _customers(org_id)
    survivor = make_customer(org, name="Survivor", phone=None, email="s@x.example")
    survivor_id = survivor.id

    with organization_context(org_id):
        services.merge_customers(org.admin, services.access_customer(survivor_id),
                                 services.access_customer(duplicate.id))
        db.session.flush()
    _delivered()
    assert _conversation(org_id, conversation_id).customer_id == survivor_id
    assert [c.phone for c in _customers(org_id)] == ["+966505556666"]

    with organization_context(org_id):
        services.delete_customer(org.admin, services.access_customer(survivor_id))
        db.session.flush()
    _delivered()
    assert _conversation(org_id, conversation_id).customer_id is None


def test_a_message_naming_a_merged_customer_reaches_the_survivor(org, profile):
    """An event still carrying the duplicate's id (relinking not yet done) lands on the
    survivor and relinks the conversation."""
    org_id, profile_id = ident(org), ident(profile)
    message, conversation_id = _customer_sends(org_id, profile_id, "0507778888", "Old", "hi")
    [duplicate] = _customers(org_id)
    survivor = make_customer(org, name="Survivor", phone=None)
    survivor_id = survivor.id
    with organization_context(org_id):
        services.merge_customers(org.admin, services.access_customer(survivor_id),
                                 services.access_customer(duplicate.id))
        db.session.flush()
        payload = {**whatsapp.message_payload(message, db.session.get(Conversation,
                                                                       conversation_id)),
                   "message_id": message.id + 10_000, "customer_id": duplicate.id}
        events.publish("message.received", payload)
    _delivered()

    assert len(_activities(org_id, survivor_id, "whatsapp_in")) == 2
    assert _conversation(org_id, conversation_id).customer_id == survivor_id


def test_with_the_crm_switched_off_whatsapp_creates_no_customers(org, profile):
    org_id, profile_id = ident(org), ident(profile)
    with organization_context(org_id):
        foundation.set_module_enabled(org.admin, "crm", False)
        db.session.flush()

    _customer_sends(org_id, profile_id, "0509990000", "Nobody", "hi")

    assert _customers(org_id) == []


def test_with_whatsapp_switched_off_the_crm_works_on_its_own(client, org):
    """Pages and the API of the CRM answer as usual; the inbox link is simply absent."""
    with organization_context(ident(org)):
        foundation.set_module_enabled(org.admin, "whatsapp", False)
        db.session.flush()
    customer = make_customer(org, name="Solo")
    headers = bearer(org.admin)

    created = client.post("/api/crm/customers", headers=headers, json={"name": "Also solo"})
    assert created.status_code == 201
    listed = client.get("/api/crm/customers", headers=headers).get_json()["items"]
    assert {item["name"] for item in listed} == {"Solo", "Also solo"}
    assert client.get("/api/crm/sales-stages", headers=headers).status_code == 200
    login(client, org.admin)
    assert client.get("/customers/").status_code == 200
    assert client.get(f"/customers/{customer.id}").status_code == 200
    with organization_context(ident(org)):
        assert services.whatsapp_conversation_id(customer) is None


def test_a_ticket_opened_is_logged_once_and_scores(org):
    """ticket.opened (published by the ticketing module to come) adds an activity and the
    ticket rule's points; delivered twice, it counts once."""
    customer = make_customer(org)
    org_id, customer_id = ident(org), customer.id
    for _delivery in range(2):
        with organization_context(org_id):
            events.publish("ticket.opened", {"ticket_id": 7, "customer_id": customer_id,
                                             "subject": "Broken order"})
        _delivered()

    assert len(_activities(org_id, customer_id, "ticket_opened")) == 1
    with organization_context(org_id):
        scored = db.session.get(Customer, customer_id, populate_existing=True)
        assert "ticket_opened" in [entry["reason"] for entry in scored.score_breakdown]
        assert db.session.scalar(select(func.count()).select_from(CustomerActivity).where(
            CustomerActivity.customer_id == customer_id)) == 2  # created, ticket_opened
