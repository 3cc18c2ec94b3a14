"""Jobs: enqueued only after commit (tried again if Redis refuses), run as the organization
that enqueued them, in a transaction of their own that commits on success and rolls back on
failure; a failure of the database or Redis runs the job again later."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from crm import jobs
from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import AuditEntry
from crm.jobs import enqueue, get_queue
from crm.permissions import module_enabled
from crm.tenancy import current_organization_id, organization_context
from crm.transaction import commit, rollback
from tests.factories import run_jobs


def write_audit(action: str) -> None:
    """A job: an audit entry, stamped with the organization the job runs as."""
    services.audit(action)


def write_then_fail(action: str) -> None:
    """A job that writes, then breaks."""
    services.audit(action)
    raise RuntimeError("job broke")


def audit_module_switch(module: str) -> None:
    """A job: record whether `module` is on for the organization the job runs as."""
    services.audit("test.module", module=module, enabled=module_enabled(module))


def _actions(org_id: int) -> list[str]:
    with organization_context(org_id):
        return list(db.session.scalars(select(AuditEntry.action).where(
            AuditEntry.action.like("test.%")).order_by(AuditEntry.id)))


def test_a_job_named_by_its_path_runs_and_a_misspelt_path_is_refused_at_once(app, org):
    """A service names its module's jobs by path (the name RQ stores); a path that names no
    function fails where it is enqueued, not later in a worker."""
    with organization_context(org.id):
        enqueue("tests.test_jobs:write_audit", "test.by_path")
        with pytest.raises(AttributeError):
            enqueue("tests.test_jobs:no_such_job")
        with pytest.raises(ImportError):
            enqueue("tests.no_such_module:write_audit")
    org_id = org.id
    commit()

    run_jobs(app)

    assert _actions(org_id) == ["test.by_path"]


def test_a_job_is_enqueued_only_when_the_transaction_commits(org):
    """Until commit the queue is empty; the commit enqueues the job once."""
    with organization_context(org.id):
        enqueue(write_audit, "test.ran")
    assert get_queue().count == 0

    commit()

    # The new organization's own set-up job (organization.registered) is queued too.
    queued = [job.args[0] for job in get_queue().jobs]
    assert queued.count("tests.test_jobs:write_audit") == 1


def test_a_rolled_back_transaction_enqueues_nothing(org):
    """A job queued in a transaction that rolls back never reaches the queue."""
    with organization_context(org.id):
        services.audit("test.before")
        enqueue(write_audit, "test.ran")
        rollback()
    commit()

    assert get_queue().count == 0


def test_a_job_runs_as_its_organization_and_its_writes_are_committed(app, org, other_org):
    """The job runs with the enqueuing organization set, commits its writes (a later rollback
    does not undo them), and leaves no organization set behind."""
    org_id, other_org_id = org.id, other_org.id  # commits expire loaded objects
    with organization_context(org_id):
        enqueue(write_audit, "test.ran")

    run_jobs(app)
    rollback()

    assert _actions(org_id) == ["test.ran"]
    assert _actions(other_org_id) == []
    assert current_organization_id() is None


def test_a_failing_job_rolls_back_its_writes(app, org):
    """A job that raises leaves nothing written and lands in the failed registry with its
    error."""
    org_id = org.id  # commits expire loaded objects
    with organization_context(org_id):
        enqueue(write_then_fail, "test.partial")

    run_jobs(app)

    assert _actions(org_id) == []
    failed = FailedJobRegistry(queue=get_queue())
    [job_id] = failed.get_job_ids()
    assert "job broke" in get_queue().fetch_job(job_id).latest_result().exc_string


def test_jobs_of_different_organizations_share_no_state(app, org, other_org):
    """One worker runs jobs of several organizations one after another; each sees its own
    organization's settings, not what the previous job looked up."""
    org_id, other_org_id = org.id, other_org.id  # commits expire loaded objects
    with organization_context(org_id):
        services.set_module_enabled(org.admin, "crm", False)
        db.session.flush()
        enqueue(audit_module_switch, "crm")
    with organization_context(other_org_id):
        enqueue(audit_module_switch, "crm")

    run_jobs(app)

    for owner, enabled in ((org_id, False), (other_org_id, True)):
        with organization_context(owner):
            entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "test.module"))
            assert entry.details == {"module": "crm", "enabled": enabled}


# -- transient failures ----------------------------------------------------------------------

_attempts: list[str] = []


def lose_the_database(action: str) -> None:
    """A job: write, then lose the connection to PostgreSQL."""
    _attempts.append(action)
    services.audit(action)
    raise OperationalError("INSERT INTO audit_entries ...", {},
                           Exception("server closed the connection unexpectedly"))


def lose_redis(action: str) -> None:
    """A job: write, then lose the connection to Redis."""
    _attempts.append(action)
    services.audit(action)
    raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@pytest.mark.parametrize("job", [lose_the_database, lose_redis], ids=["postgresql", "redis"])
def test_a_job_failing_on_the_database_or_redis_runs_again_later(app, org, job):
    """A database or Redis error rolls the job's writes back and schedules it again after the
    first backoff interval; it does not land in the failed registry."""
    org_id = org.id  # commits expire loaded objects
    with organization_context(org_id):
        enqueue(job, "test.partial")
    before = datetime.now(UTC)

    run_jobs(app)

    assert _actions(org_id) == []
    assert FailedJobRegistry(queue=get_queue()).get_job_ids() == []
    scheduled = ScheduledJobRegistry(queue=get_queue())
    [job_id] = [job_id for job_id in scheduled.get_job_ids()
                if get_queue().fetch_job(job_id).args[0] == f"tests.test_jobs:{job.__name__}"]
    delay = (scheduled.get_scheduled_time(job_id) - before).total_seconds()
    assert jobs.RETRY_INTERVALS[0] - 1 <= delay <= jobs.RETRY_INTERVALS[0] + 5


def test_a_job_still_failing_after_its_retries_lands_in_the_failed_registry(app, org,
                                                                           monkeypatch):
    """Each retry waits for its interval; after the last one the job fails with its error, for
    someone to look at."""
    monkeypatch.setattr(jobs, "RETRY_INTERVALS", (0, 0))  # no wait: the burst runs them all
    _attempts.clear()
    with organization_context(org.id):
        enqueue(lose_the_database, "test.partial")

    run_jobs(app)

    assert _attempts == ["test.partial"] * 3
    [job_id] = FailedJobRegistry(queue=get_queue()).get_job_ids()
    assert "server closed the connection" in get_queue().fetch_job(
        job_id).latest_result().exc_string


def test_an_enqueue_that_fails_after_commit_is_tried_again(org, monkeypatch):
    """Redis failing for a moment as the transaction commits does not lose the job: the
    enqueue is tried again."""
    real = Queue.enqueue
    failures = [RedisConnectionError("Connection refused")] * 2

    def flaky(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Queue, "enqueue", flaky)
    with organization_context(org.id):
        enqueue(write_audit, "test.ran")

    commit()

    queued = [job.args[0] for job in get_queue().jobs]
    assert queued.count("tests.test_jobs:write_audit") == 1
