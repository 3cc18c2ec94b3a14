"""Keeping and applying webhook deliveries (crm/whatsapp/ingest.py): the webhook only stores a
verified delivery; the ingest job applies it, once, whatever dies or fails on the way."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select, update

from crm.extensions import db
from crm.models import utcnow
from crm.whatsapp import ingest, services
from crm.whatsapp.models import WebhookDelivery
from tests.factories import run_jobs
from tests.whatsapp.test_cloud import Number, deliver, messages, payload


@pytest.fixture
def number():
    return Number()


def text_delivery(n: int, body: str = "") -> bytes:
    """Meta's text delivery, as message number `n` of the same contact."""
    delivery = json.loads(payload("text"))
    message = delivery["entry"][0]["changes"][0]["value"]["messages"][0]
    message["id"] = f"wamid.TEST{n:08d}"
    message["text"]["body"] = body or f"message {n}"
    return json.dumps(delivery).encode()


def kept() -> list[WebhookDelivery]:
    return list(db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)
                                   .execution_options(populate_existing=True)))


def inbound_queue(app) -> Queue:
    return Queue(ingest.QUEUE, connection=app.extensions["crm.redis"])


def test_the_webhook_keeps_the_delivery_and_the_job_applies_it(app, client, number):
    """Meta's 200 means the delivery is safely stored; the job stores the message and forgets
    the delivery."""
    response = deliver(client, number.url, text_delivery(1), apply=False)

    assert response.status_code == 200
    assert messages(number.org_id) == []
    [delivery] = kept()
    assert (delivery.profile_id, delivery.body) == (number.profile_id, text_delivery(1))

    run_jobs(app, queues=(ingest.QUEUE,))
    assert [message.body for message in messages(number.org_id)] == ["message 1"]
    assert kept() == []


def test_one_drain_waits_for_many_deliveries_and_applies_them_in_order(app, client, number):
    """However many deliveries arrive while it waits, one job is queued and applies them all,
    oldest first."""
    for n in range(3):
        deliver(client, number.url, text_delivery(n), apply=False)

    assert inbound_queue(app).count == 1
    run_jobs(app, queues=(ingest.QUEUE,))
    assert [m.body for m in messages(number.org_id)] == ["message 0", "message 1", "message 2"]
    assert kept() == []


def test_a_delivery_held_by_a_job_that_died_waits_for_its_lease_then_is_applied_once(
        app, client, number):
    """A job killed mid-batch leaves its deliveries claimed: no other drain takes them while
    the lease runs, a retry is scheduled for when it ends, and then they are applied once."""
    deliver(client, number.url, text_delivery(1), apply=False)
    db.session.execute(update(WebhookDelivery).values(claimed_until=utcnow() + ingest.LEASE,
                                                      attempts=1))
    deliver(client, number.url, text_delivery(2))  # a later delivery's drain runs now

    assert [m.body for m in messages(number.org_id)] == ["message 2"]
    assert len(kept()) == 1
    assert ScheduledJobRegistry(queue=inbound_queue(app)).count == 1

    db.session.execute(update(WebhookDelivery).values(claimed_until=utcnow() - timedelta(1)))
    ingest.request_drain()  # the scheduled retry, due now
    run_jobs(app, queues=(ingest.QUEUE,))
    assert [m.body for m in messages(number.org_id)] == ["message 2", "message 1"]
    assert kept() == []


def test_a_delivery_that_fails_holds_back_only_itself(app, client, number, monkeypatch):
    """One delivery that cannot be applied keeps its error and is retried later; those around
    it, in the same batch and organization, are applied."""
    receive = services.receive_inbound

    def fails_on_poison(profile, inbound):
        if inbound.body == "poison":
            raise RuntimeError("cannot apply this one")
        return receive(profile, inbound)

    monkeypatch.setattr(services, "receive_inbound", fails_on_poison)
    for n, body in enumerate(["before", "poison", "after"]):
        deliver(client, number.url, text_delivery(n, body), apply=False)
    run_jobs(app, queues=(ingest.QUEUE,))

    assert [m.body for m in messages(number.org_id)] == ["before", "after"]
    [failed] = kept()
    assert failed.body == text_delivery(1, "poison")
    assert failed.attempts == 1
    assert failed.last_error == "RuntimeError: cannot apply this one"


def test_a_delivery_that_keeps_failing_is_left_for_someone_to_look_at(app, client, number,
                                                                      monkeypatch):
    """After MAX_ATTEMPTS a delivery is no longer claimed: it stays, with its last error."""
    deliver(client, number.url, text_delivery(1), apply=False)
    db.session.execute(update(WebhookDelivery).values(attempts=ingest.MAX_ATTEMPTS))
    run_jobs(app, queues=(ingest.QUEUE,))

    assert messages(number.org_id) == []
    assert [delivery.attempts for delivery in kept()] == [ingest.MAX_ATTEMPTS]


def test_a_delivery_applied_twice_changes_nothing_the_second_time(app, client, number):
    """A job cut off after its commit, before forgetting the delivery, applies it again: one
    message, one unread."""
    deliver(client, number.url, text_delivery(1))
    deliver(client, number.url, text_delivery(1))

    assert len(messages(number.org_id)) == 1
    assert kept() == []


def test_a_lost_drain_is_requested_again_once_the_pending_mark_expires(app, client, number):
    """If the queued drain is lost (Redis flushed), the pending mark expires and the next
    delivery queues a drain that applies both."""
    deliver(client, number.url, text_delivery(1), apply=False)
    inbound_queue(app).empty()
    deliver(client, number.url, text_delivery(2), apply=False)
    assert inbound_queue(app).count == 0  # the mark still says a drain is waiting

    app.extensions["crm.redis"].delete(ingest.PENDING_KEY)  # as its expiry would
    deliver(client, number.url, text_delivery(3))
    assert [m.body for m in messages(number.org_id)] == ["message 1", "message 2", "message 3"]


@pytest.mark.live
def test_deliveries_kept_while_no_worker_ran_are_applied_when_one_starts(live_server):
    """The webhook answered Meta, then the queued drain was lost (Redis restarted empty): a
    worker process starting up applies what was kept."""
    import requests

    from tests.factories import make_org
    from tests.whatsapp.factories import make_profile
    from tests.whatsapp.test_cloud import APP_SECRET, PHONE_NUMBER_ID, signature

    with live_server.transaction():
        org = make_org()
        org_id = org.id
        profile_id = make_profile(org, phone_number_id=PHONE_NUMBER_ID, app_secret=APP_SECRET).id
    body = text_delivery(1, "while the worker was down")
    answer = requests.post(f"{live_server.url}/webhooks/whatsapp/{profile_id}", data=body,
                           headers={"Content-Type": "application/json",
                                    "X-Hub-Signature-256": signature(body)}, timeout=10)
    assert answer.status_code == 200
    live_server.app.extensions["crm.redis"].flushdb()

    worker = live_server.run_worker(queues=(ingest.QUEUE,))
    assert worker.returncode == 0, worker.stderr
    with live_server.transaction(org_id):
        assert [m.body for m in messages(org_id)] == ["while the worker was down"]
        assert kept() == []
