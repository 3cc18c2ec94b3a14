"""What the recovery job (crm/recovery.py) heals in the WhatsApp module: a send whose job was
lost is sent, exactly once; a send a dead job left `sending` becomes `unknown` once its lease is
over, and the provider's status webhook settles it; deliveries the webhook kept are applied
whatever a stale drain mark says."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from crm.extensions import db
from crm.foundation.models import User
from crm.jobs import get_queue
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp import ingest, services
from crm.whatsapp.models import Conversation, Message
from tests.factories import bearer, enqueues_failing, run_jobs, run_recovery
from tests.whatsapp.test_cloud import Number, customer_writes, deliver, messages, send_status
from tests.whatsapp.test_ingest import inbound_queue, kept, text_delivery


@pytest.fixture
def number():
    return Number()


def change(number: Number, message_id: int, **values) -> None:
    """Change a message's row as a worker, or the passing of time, would."""
    with organization_context(number.org_id):
        db.session.execute(update(Message).where(Message.id == message_id).values(**values))


def send(number: Number, conversation: Conversation, text: str) -> int:
    """The admin writes to the conversation (the outbox row and its job, after commit)."""
    with organization_context(number.org_id):
        admin = db.session.get(User, number.admin_id)
        return services.send_text(db.session.get(Conversation, conversation.id), admin,
                                  text).id


def send_jobs() -> list[int]:
    """The message ids of the send jobs waiting in the WhatsApp queue."""
    return [job.args[2][0] for job in get_queue(services.QUEUE).jobs]


def test_a_send_whose_job_was_lost_is_sent_by_the_recovery_job_exactly_once(
        app, client, graph, number, monkeypatch):
    """Redis refused the job of a send the API accepted: the row stays queued; once it has
    waited a minute, the recovery job enqueues it again, once however often it runs, and it is
    sent once."""
    conversation = customer_writes(client, number)
    with organization_context(number.org_id):
        headers = bearer(db.session.get(User, number.admin_id))

    with enqueues_failing(monkeypatch):
        answer = client.post("/api/whatsapp/send", headers=headers,
                             json={"conversation_id": conversation.id, "text": "Still there?"})
    assert (answer.status_code, answer.json["status"]) == (201, "queued")
    message_id = answer.json["id"]
    run_jobs(app, queues=(services.QUEUE,))
    run_recovery(app)  # not a minute old: its job may still be on the way
    assert send_jobs() == []

    change(number, message_id, created_at=utcnow() - timedelta(minutes=2))
    run_recovery(app)
    run_recovery(app)
    assert send_jobs() == [message_id]
    run_jobs(app, queues=(services.QUEUE,))
    run_recovery(app)
    run_jobs(app, queues=(services.QUEUE,))

    [sent] = graph.sends()
    assert sent["biz_opaque_callback_data"] == str(message_id)
    assert number.get(Message, message_id).status == "sent"


def test_a_send_whose_job_still_waits_is_not_enqueued_again(app, client, graph, number):
    """A queue slower than a minute: the recovery job sees the send's own job waiting and adds
    none."""
    conversation = customer_writes(client, number)
    message_id = send(number, conversation, "Behind a long queue")
    change(number, message_id, created_at=utcnow() - timedelta(minutes=5))

    run_recovery(app)

    assert send_jobs() == [message_id]
    run_jobs(app, queues=(services.QUEUE,))
    assert len(graph.sends()) == 1


def test_a_send_left_sending_past_its_lease_becomes_unknown_and_the_webhook_settles_it(
        app, client, graph, number):
    """A worker marked the message `sending` and died with it: while its lease holds it may be
    on its way and is left alone; after that it is `unknown` (never sent again), and Meta's
    status webhook, naming our id, settles it."""
    conversation = customer_writes(client, number)
    message_id = send(number, conversation, "Cut off")
    run_jobs(app, queues=("default",))  # anything but the send: the worker dies with it
    get_queue(services.QUEUE).empty()
    change(number, message_id, status="sending", claimed_until=utcnow() + timedelta(minutes=1))

    run_recovery(app)
    assert number.get(Message, message_id).status == "sending"

    change(number, message_id, claimed_until=utcnow() - timedelta(seconds=1))
    run_recovery(app)
    run_jobs(app, queues=(services.QUEUE,))
    assert number.get(Message, message_id).status == "unknown"

    send_status(client, number, "wamid.SETTLED", "delivered", message_id)
    message = number.get(Message, message_id)
    assert (message.status, message.provider_message_id) == ("delivered", "wamid.SETTLED")
    assert graph.sends() == []


def test_kept_deliveries_are_applied_whatever_a_stale_drain_mark_says(app, client, number):
    """The drain a delivery asked for was lost (its worker killed as it took it) and its mark
    is left behind, which stops later deliveries asking: the recovery job drains anyway."""
    deliver(client, number.url, text_delivery(1), apply=False)
    deliver(client, number.url, text_delivery(2), apply=False)
    inbound_queue(app).empty()
    assert app.extensions["crm.redis"].exists(ingest.PENDING_KEY)

    run_recovery(app)
    run_jobs(app, queues=(ingest.QUEUE,))

    assert [message.body for message in messages(number.org_id)] == ["message 1", "message 2"]
    assert kept(number.org_id) == []
