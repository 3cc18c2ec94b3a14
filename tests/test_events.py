"""Events between modules: delivered only after the publishing transaction commits, as the
publishing organization, in-process or as RQ jobs, one failing subscriber never stopping the
others."""

from __future__ import annotations

from collections import defaultdict

import pytest
from redis import Redis
from sqlalchemy import select

from crm import events
from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import AuditEntry
from crm.jobs import enqueue, get_queue
from crm.tenancy import current_organization_id, organization_context
from crm.transaction import commit, rollback
from tests.conftest import free_port
from tests.factories import run_jobs

EVENT = "test.happened"


@pytest.fixture(autouse=True)
def _no_other_subscribers(monkeypatch):
    """Each test subscribes on an empty registry, and leaves the real one untouched."""
    monkeypatch.setattr(events, "_subscribers", defaultdict(list))


def listen() -> list[tuple[dict, int | None]]:
    """Subscribe in-process to EVENT; the list fills with each payload and the organization set."""
    calls: list[tuple[dict, int | None]] = []
    events.subscribe(EVENT)(lambda payload: calls.append((payload, current_organization_id())))
    return calls


def record_in_job(payload: dict) -> None:
    """A job subscriber: leaves an audit entry, which is stamped with the current organization."""
    services.audit("test.heard", **payload)


def _audit_entries(org_id: int, action: str = "test.heard") -> list[AuditEntry]:
    with organization_context(org_id):
        return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_subscriber_runs_after_commit_as_the_publishing_organization(org):
    """Nothing runs at publish time; after commit the subscriber gets the payload with the
    publisher's organization set, even though the commit happens outside it."""
    org_id = org.id  # commits expire loaded objects
    heard = listen()
    with organization_context(org_id):
        events.publish(EVENT, {"n": 1})
    assert heard == []

    commit()

    assert heard == [({"n": 1}, org_id)]


def test_an_event_of_a_rolled_back_transaction_is_never_delivered(org):
    """A rolled-back transaction delivers nothing, in-process or as a job."""
    org_id = org.id  # commits expire loaded objects
    heard = listen()
    events.subscribe(EVENT, job=True)(record_in_job)
    with organization_context(org_id):
        services.audit("test.unrelated")
        events.publish(EVENT, {"n": 1})
        rollback()
    commit()

    assert heard == []
    assert get_queue().count == 0


def test_an_event_published_before_touching_the_database_is_dropped_on_rollback(org):
    """Even with no SQL run yet in the transaction, a rollback forgets the event."""
    org_id = org.id  # commits expire loaded objects
    heard = listen()
    commit()  # the next transaction starts with the publish
    with organization_context(org_id):
        events.publish(EVENT, {"n": 1})
        rollback()
    commit()

    assert heard == []


def test_a_job_subscriber_runs_as_an_rq_job_of_the_publishing_organization(app, org,
                                                                          other_org):
    """A job=True subscriber is enqueued at commit and runs in the worker as the publisher."""
    org_id, other_org_id = org.id, other_org.id  # commits expire loaded objects
    events.subscribe(EVENT, job=True)(record_in_job)
    with organization_context(org_id):
        events.publish(EVENT, {"n": 7})
    commit()
    assert get_queue().count == 1
    assert _audit_entries(org_id) == []

    run_jobs(app)

    assert [entry.details for entry in _audit_entries(org_id)] == [{"n": 7}]
    assert _audit_entries(other_org_id) == []


def test_a_failing_subscriber_does_not_stop_the_others(org, caplog):
    """The failing subscriber's writes are rolled back and logged; the next one still runs."""
    org_id = org.id  # commits expire loaded objects

    @events.subscribe(EVENT)
    def fail(payload: dict) -> None:
        services.audit("test.failed")
        raise RuntimeError("subscriber broke")

    heard = listen()
    with organization_context(org_id):
        events.publish(EVENT, {"n": 1})
    commit()

    assert heard == [({"n": 1}, org_id)]
    assert _audit_entries(org_id, "test.failed") == []
    assert "subscriber broke" in caplog.text


def test_side_effects_of_a_failing_subscriber_are_never_announced(org):
    """A subscriber that queued a job and then failed enqueues nothing, even when the next
    subscriber commits."""
    org_id = org.id  # commits expire loaded objects

    @events.subscribe(EVENT)
    def enqueue_then_fail(payload: dict) -> None:
        enqueue(record_in_job, payload)
        raise RuntimeError("subscriber broke")

    heard = listen()
    with organization_context(org_id):
        events.publish(EVENT, {"n": 1})
    commit()

    assert heard == [({"n": 1}, org_id)]
    assert get_queue().count == 0


def test_an_unreachable_queue_does_not_stop_in_process_subscribers(app, org, monkeypatch,
                                                                   caplog):
    """When a job subscriber cannot be enqueued (Redis down), in-process subscribers after it
    still run, and the failure is logged."""
    org_id = org.id  # commits expire loaded objects
    events.subscribe(EVENT, job=True)(record_in_job)
    heard = listen()
    monkeypatch.setitem(app.extensions, "crm.redis", Redis(port=free_port()))  # nothing listens
    with organization_context(org_id):
        events.publish(EVENT, {"n": 1})
    commit()

    assert heard == [({"n": 1}, org_id)]
    assert "could not enqueue subscriber" in caplog.text


def test_a_job_subscriber_must_be_importable():
    """A nested function cannot be found by a worker, so subscribing it as a job fails at once."""
    def nested(payload: dict) -> None: ...

    with pytest.raises(ValueError, match="module-level"):
        events.subscribe(EVENT, job=True)(nested)
