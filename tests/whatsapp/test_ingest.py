"""Keeping and applying webhook deliveries (crm/whatsapp/ingest.py): the webhook only stores a
verified delivery; the ingest job applies it, once, whatever dies or fails on the way."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import insert, select, text, update

from crm.extensions import db
from crm.jobs import run_job
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp import ingest, jobs, services
from crm.whatsapp.models import WebhookDelivery
from tests.factories import run_jobs
from tests.whatsapp.test_cloud import (
    PHONE_NUMBER_ID,
    PLATFORM_SECRET,
    Number,
    conversations,
    deliver,
    messages,
    payload,
)


@pytest.fixture
def number():
    return Number()


def text_delivery(n: int, body: str = "", phone_number_id: str = PHONE_NUMBER_ID) -> bytes:
    """Meta's text delivery, as message number `n` of the same contact."""
    delivery = json.loads(payload("text", phone_number_id=phone_number_id))
    message = delivery["entry"][0]["changes"][0]["value"]["messages"][0]
    message["id"] = f"wamid.TEST{n:08d}"
    message["text"]["body"] = body or f"message {n}"
    return json.dumps(delivery).encode()


def kept(org_id: int) -> list[WebhookDelivery]:
    """The deliveries `org_id` keeps (each is behind its organization's wall)."""
    with organization_context(org_id):
        return list(db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)
                                       .execution_options(populate_existing=True)))


def change_kept(org_id: int, *ids: int, **values) -> None:
    """Change what `org_id` keeps (only the deliveries `ids`, when given)."""
    statement = update(WebhookDelivery).values(**values)
    if ids:
        statement = statement.where(WebhookDelivery.id.in_(ids))
    with organization_context(org_id):
        db.session.execute(statement)


def inbound_queue(app) -> Queue:
    return Queue(ingest.QUEUE, connection=app.extensions["crm.redis"])


def test_the_webhook_keeps_the_delivery_and_the_job_applies_it(app, client, number):
    """Meta's 200 means the delivery is safely stored; the job stores the message and forgets
    the delivery."""
    response = deliver(client, number.url, text_delivery(1), apply=False)

    assert response.status_code == 200
    assert messages(number.org_id) == []
    [delivery] = kept(number.org_id)
    assert (delivery.profile_id, delivery.body) == (number.profile_id, text_delivery(1))

    run_jobs(app, queues=(ingest.QUEUE,))
    assert [message.body for message in messages(number.org_id)] == ["message 1"]
    assert kept(number.org_id) == []


def test_one_drain_waits_for_many_deliveries_and_applies_them_in_order(app, client, number):
    """However many deliveries arrive while it waits, one job is queued and applies them all,
    oldest first."""
    for n in range(3):
        deliver(client, number.url, text_delivery(n), apply=False)

    assert inbound_queue(app).count == 1
    run_jobs(app, queues=(ingest.QUEUE,))
    assert [m.body for m in messages(number.org_id)] == ["message 0", "message 1", "message 2"]
    assert kept(number.org_id) == []


def test_a_delivery_held_by_a_job_that_died_waits_for_its_lease_then_is_applied_once(
        app, client, number):
    """A job killed mid-batch leaves its deliveries claimed: no other drain takes them while
    the lease runs, a retry is scheduled for when it ends, and then they are applied once."""
    deliver(client, number.url, text_delivery(1), apply=False)
    change_kept(number.org_id, claimed_until=utcnow() + jobs.LEASE, attempts=1)
    deliver(client, number.url, text_delivery(2))  # a later delivery's drain runs now

    assert [m.body for m in messages(number.org_id)] == ["message 2"]
    assert len(kept(number.org_id)) == 1
    assert ScheduledJobRegistry(queue=inbound_queue(app)).count == 1

    change_kept(number.org_id, claimed_until=utcnow() - timedelta(1))
    ingest.request_drain()  # the scheduled retry, due now
    run_jobs(app, queues=(ingest.QUEUE,))
    assert [m.body for m in messages(number.org_id)] == ["message 2", "message 1"]
    assert kept(number.org_id) == []


def test_a_delivery_that_fails_holds_back_only_itself(app, client, number, monkeypatch):
    """One delivery that cannot be applied keeps its error and is retried later; those around
    it, in the same batch and organization, are applied."""
    receive = services.receive_many

    def fails_on_poison(profile, inbounds):
        if any(inbound.body == "poison" for inbound in inbounds):
            raise RuntimeError("cannot apply this one")
        return receive(profile, inbounds)

    monkeypatch.setattr(services, "receive_many", fails_on_poison)
    for n, body in enumerate(["before", "poison", "after"]):
        deliver(client, number.url, text_delivery(n, body), apply=False)
    run_jobs(app, queues=(ingest.QUEUE,))

    assert [m.body for m in messages(number.org_id)] == ["before", "after"]
    [failed] = kept(number.org_id)
    assert failed.body == text_delivery(1, "poison")
    assert failed.attempts == 1
    assert failed.last_error == "RuntimeError: cannot apply this one"


def test_a_delivery_that_keeps_failing_is_left_for_someone_to_look_at(app, client, number,
                                                                      monkeypatch):
    """After MAX_ATTEMPTS a delivery is no longer claimed: it stays, with its last error."""
    deliver(client, number.url, text_delivery(1), apply=False)
    change_kept(number.org_id, attempts=ingest.MAX_ATTEMPTS)
    run_jobs(app, queues=(ingest.QUEUE,))

    assert messages(number.org_id) == []
    assert [delivery.attempts for delivery in kept(number.org_id)] == [ingest.MAX_ATTEMPTS]


def test_a_delivery_applied_twice_changes_nothing_the_second_time(app, client, number):
    """A job cut off after its commit, before forgetting the delivery, applies it again: one
    message, one unread."""
    deliver(client, number.url, text_delivery(1))
    deliver(client, number.url, text_delivery(1))

    assert len(messages(number.org_id)) == 1
    assert kept(number.org_id) == []


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
    from tests.whatsapp.test_cloud import APP_SECRET, signature

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
        assert kept(org_id) == []


def test_a_batch_applies_like_the_deliveries_one_by_one(app, client, number):
    """Many deliveries applied together end as they would one by one: per conversation the
    unread count of its new messages and the last as preview; a copy inside the batch stored
    once; a reply and a reaction to a message of the same batch find it."""
    other = json.loads(text_delivery(3, "from someone else"))
    value = other["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"profile": {"name": "Omar"}, "wa_id": "966501112233"}]
    value["messages"][0]["from"] = "966501112233"
    deliveries = [text_delivery(1, "first"), text_delivery(2, "second"), text_delivery(1, "first"),
                  json.dumps(other).encode(),
                  payload("reply", reply_to="wamid.TEST00000001"),
                  payload("reaction", reaction_id="wamid.REACTION",
                          reacted_to="wamid.TEST00000002")]
    for body in deliveries:
        deliver(client, number.url, body, apply=False)
    run_jobs(app, queues=(ingest.QUEUE,))

    stored = {message.provider_message_id: message for message in messages(number.org_id)}
    assert len(stored) == 5  # the copy of the first is not stored twice
    first, second = stored["wamid.TEST00000001"], stored["wamid.TEST00000002"]
    [reply] = [m for m in stored.values() if m.reply_to_id is not None]
    assert reply.reply_to_id == first.id
    assert second.content["reactions"] == {"contact": "\u2764\ufe0f"}
    by_contact = {c.contact_phone: c for c in conversations(number.org_id)}
    sheena, omar = by_contact["+16505551234"], by_contact["+966501112233"]
    assert (sheena.unread_count, omar.unread_count) == (3, 1)  # the reaction is no message
    assert sheena.last_message_preview == reply.body
    assert (omar.contact_name, omar.last_message_preview) == ("Omar", "from someone else")


@pytest.mark.live
def test_two_workers_draining_at_once_apply_each_delivery_once(live_server):
    """Two worker processes drain side by side: they claim disjoint batches (SKIP LOCKED), and
    every message is stored and counted once."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from crm.jobs import enqueue_now
    from tests.factories import make_org
    from tests.whatsapp.factories import make_profile
    from tests.whatsapp.test_cloud import APP_SECRET, signature

    count, number_id = 2 * jobs.BATCH + 50, "106540352249999"  # the live database is shared
    with live_server.transaction():
        org = make_org()
        org_id = org.id
        profile_id = make_profile(org, phone_number_id=number_id, app_secret=APP_SECRET).id
    http = requests.Session()
    for n in range(count):
        body = text_delivery(n, phone_number_id=number_id)
        assert http.post(f"{live_server.url}/webhooks/whatsapp/{profile_id}", data=body,
                         headers={"Content-Type": "application/json",
                                  "X-Hub-Signature-256": signature(body)},
                         timeout=10).status_code == 200
    with live_server.app.app_context():
        live_server.app.extensions["crm.redis"].flushdb()
        for _drain in range(2):
            enqueue_now(f"{jobs.__name__}:drain", queue=ingest.QUEUE, org_id=None)

    with ThreadPoolExecutor(2) as pool:
        workers = list(pool.map(lambda _n: live_server.run_worker(queues=(ingest.QUEUE,)),
                                range(2)))
    assert [worker.returncode for worker in workers] == [0, 0], workers[0].stderr
    with live_server.transaction(org_id):
        stored = messages(org_id)
        assert sorted(m.provider_message_id for m in stored) == sorted(
            f"wamid.TEST{n:08d}" for n in range(count))
        assert [c.unread_count for c in conversations(org_id)] == [count]
        assert kept(org_id) == []


# -- each organization's deliveries behind its own wall ----------------------------------------

def test_a_delivery_is_kept_behind_its_organizations_wall(client, number, other_org):
    """The webhook stamps a delivery with the organization of the profile it came through:
    another organization sees nothing of it, and neither does SQL with no organization set."""
    other_org_id = other_org.id
    deliver(client, number.url, text_delivery(1), apply=False)

    [delivery] = kept(number.org_id)
    assert delivery.organization_id == number.org_id
    assert kept(other_org_id) == []
    with organization_context(None):
        assert db.session.execute(text("SELECT count(*) FROM whatsapp_webhook_deliveries")
                                  ).scalar() == 0


def test_a_platform_delivery_naming_two_organizations_is_kept_apart(app, client, monkeypatch):
    """Routed at receipt by phone number id: each organization keeps only its own changes, so
    no row holds another organization's messages; each is applied in its organization."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)
    first, second = Number("111111111111111"), Number("222222222222222")
    body = payload("platform", first_phone_number_id="111111111111111",
                   second_phone_number_id="222222222222222")

    assert deliver(client, "/webhooks/whatsapp", body, secret=PLATFORM_SECRET,
                   apply=False).status_code == 200

    [mine], [theirs] = kept(first.org_id), kept(second.org_id)
    assert b"Hello first business" in mine.body
    assert b"Hello second business" not in mine.body
    assert b"Hello second business" in theirs.body
    assert b"Hello first business" not in theirs.body
    run_jobs(app, queues=(ingest.QUEUE,))
    assert [m.body for m in messages(first.org_id)] == ["Hello first business"]
    assert [m.body for m in messages(second.org_id)] == ["Hello second business"]


def test_a_platform_delivery_for_no_known_number_is_dropped_and_answered(app, client, caplog,
                                                                         monkeypatch):
    """Nobody here has that number: 200 (Meta would otherwise retry forever), nothing kept and
    no drain queued, a log line says why."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)

    response = deliver(client, "/webhooks/whatsapp", payload("text", phone_number_id="5550001"),
                       secret=PLATFORM_SECRET, apply=False)

    assert response.status_code == 200
    assert inbound_queue(app).count == 0
    assert "5550001" in caplog.text


def test_deleting_an_organization_deletes_its_deliveries(client, number):
    """The deliveries go with their organization (ON DELETE CASCADE)."""
    deliver(client, number.url, text_delivery(1), apply=False)

    with organization_context(number.org_id):
        db.session.execute(text("DELETE FROM organizations WHERE id = :id"),
                           {"id": number.org_id})

    assert kept(number.org_id) == []


# -- one flooding number delays nobody else -----------------------------------------------------

def test_a_number_flooding_its_webhook_is_told_to_retry_later(app, client, number,
                                                               monkeypatch):
    """Over WHATSAPP_WEBHOOK_PER_PROFILE a number's deliveries answer 429 (Meta retries later)
    and keep nothing; another number's webhook is not affected."""
    monkeypatch.setitem(app.config, "WHATSAPP_WEBHOOK_PER_PROFILE", "3 per minute")
    other = Number("106540352277777", app_secret="other-secret")

    answers = [deliver(client, number.url, text_delivery(n), apply=False).status_code
               for n in range(5)]
    elsewhere = deliver(client, other.url, text_delivery(1, phone_number_id="106540352277777"),
                        secret="other-secret", apply=False)

    assert answers == [200, 200, 200, 429, 429]
    assert elsewhere.status_code == 200
    assert len(kept(number.org_id)) == 3


def test_the_platform_webhook_limits_each_number_it_routes_to(app, client, number,
                                                              monkeypatch):
    """The same limit holds for a number's deliveries through the platform's webhook."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)
    monkeypatch.setitem(app.config, "WHATSAPP_WEBHOOK_PER_PROFILE", "1 per minute")

    answers = [deliver(client, "/webhooks/whatsapp", text_delivery(n), secret=PLATFORM_SECRET,
                       apply=False).status_code for n in range(2)]

    assert answers == [200, 429]
    assert len(kept(number.org_id)) == 1


def test_a_backlog_of_one_organization_does_not_delay_anothers(app, client, number):
    """Organization A has 1,000 deliveries waiting when B's one arrives: the drain takes a
    share of each organization in turn, so B's is applied in its first round, not after A's
    backlog."""
    with organization_context(number.org_id):
        db.session.execute(insert(WebhookDelivery), [
            {"organization_id": number.org_id, "profile_id": number.profile_id,
             "body": text_delivery(n)} for n in range(1000)])
    b = Number("106540352288888", app_secret="b-secret")
    deliver(client, b.url, text_delivery(1, "from B", phone_number_id="106540352288888"),
            secret="b-secret", apply=False)

    run_jobs(app, queues=(ingest.QUEUE,))

    a_ids = sorted(message.id for message in messages(number.org_id))
    [b_message] = messages(b.org_id)
    assert len(a_ids) == 1000
    assert b_message.id < a_ids[jobs.BATCH]


# -- purging -------------------------------------------------------------------------------------

def test_dead_deliveries_are_purged_once_the_retention_is_over(app, client, number):
    """A delivery that used up its attempts stays WHATSAPP_DELIVERY_RETENTION_DAYS for someone
    to look at; the drain schedules the purge for then, and the purge deletes it and nothing
    else."""
    for n in range(3):
        deliver(client, number.url, text_delivery(n), apply=False)
    expired, recent, waiting = (delivery.id for delivery in kept(number.org_id))
    retention = timedelta(days=app.config["WHATSAPP_DELIVERY_RETENTION_DAYS"])
    change_kept(number.org_id, expired, recent, attempts=ingest.MAX_ATTEMPTS)
    change_kept(number.org_id, expired, received_at=utcnow() - retention - timedelta(hours=1))
    change_kept(number.org_id, recent, waiting,
                received_at=utcnow() - retention + timedelta(hours=1))
    change_kept(number.org_id, waiting, claimed_until=utcnow() + jobs.LEASE, attempts=1)

    run_jobs(app, queues=(ingest.QUEUE,))  # the drain: nothing to apply, a purge to schedule
    scheduled = ScheduledJobRegistry(queue=inbound_queue(app))
    purges = [job_id for job_id in scheduled.get_job_ids()
              if "purge" in inbound_queue(app).fetch_job(job_id).args[0]]
    assert len(purges) == 1
    run_job(f"{jobs.__name__}:purge", None, (), {})

    assert [delivery.id for delivery in kept(number.org_id)] == [recent, waiting]
