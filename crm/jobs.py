"""RQ queues, and the job context: every job runs as the organization that enqueued it.

Jobs are enqueued after commit (`enqueue`), so a rolled-back request starts no work. RQ runs a
job at least once, so every job must be idempotent. The job runs in its own transaction,
committed here; the worker process creates the app once (see crm/worker.py).

Nothing is lost to a moment of trouble: an enqueue that Redis refuses is tried again at once,
briefly (what still fails is found again by the recovery job, crm/recovery.py), and a job that
fails on a database or Redis error, or raises TransientError, runs again after each of
RETRY_INTERVALS. Any other error is a bug: the job fails at once, into RQ's failed registry.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Retry, get_current_job
from rq.job import JobStatus
from sqlalchemy.exc import InterfaceError, OperationalError

from crm.tenancy import current_organization_id, organization_context
from crm.transaction import commit, on_commit, rollback

log = logging.getLogger("crm.jobs")
T = TypeVar("T")

# Jobs that run for minutes (an import, rescoring a whole organization) wait here, for a worker
# of their own (`crm up` runs one), so no reply, delivery or email waits behind them.
BULK_QUEUE = "bulk"

JOB_TIMEOUT = 600  # seconds: RQ stops a job that runs longer
# Seconds before each new attempt of a job that failed for a moment (five, over ~45 minutes).
RETRY_INTERVALS = (10, 30, 120, 600, 1800)
# Seconds between the attempts of an enqueue that Redis refused (three, within a second).
ENQUEUE_RETRY_DELAYS = (0.1, 0.5)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
# PostgreSQL out of reach, a deadlock or a serialization failure (all OperationalError), a
# connection gone (InterfaceError), Redis out of reach.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, *REDIS_DOWN)
# Whose RQ status says it will run (or is running): not to be enqueued again.
IN_FLIGHT = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


class TransientError(Exception):
    """Raised by a job whose failure is of a moment (a provider down): run it again later."""


def redis() -> Redis:
    return current_app.extensions["crm.redis"]


def get_queue(name: str = "default") -> Queue:
    return Queue(name, connection=redis(), default_timeout=JOB_TIMEOUT)


def resolve(path: str) -> Callable:
    """The function a job's path ("module:function", the name RQ stores) names."""
    module_name, _, attr = path.partition(":")
    func = importlib.import_module(module_name)
    for part in attr.split("."):
        func = getattr(func, part)
    return func


def _path(target: str | Callable) -> str:
    """A job's path. One given as text is resolved at once, so that a misspelt path fails
    where it is enqueued rather than in a worker; services name their module's jobs so
    (jobs.py builds on services, not the other way round)."""
    if isinstance(target, str):
        resolve(target)
        return target
    return f"{target.__module__}:{target.__qualname__}"


def enqueue(target: str | Callable, *args: Any, queue: str = "default",
            job_id: str | None = None, **kwargs: Any) -> None:
    """Enqueue `target(*args, **kwargs)` after commit, as the current organization.

    `job_id` names the job, for jobs the recovery job may enqueue again (`in_flight`).
    """
    org_id = current_organization_id()
    path = _path(target)
    on_commit(lambda: enqueue_now(path, *args, queue=queue, org_id=org_id, job_id=job_id,
                                  **kwargs))


def enqueue_now(path: str, *args: Any, queue: str = "default", org_id: int | None,
                description: str | None = None, job_id: str | None = None, **kwargs: Any):
    return _retrying(lambda: get_queue(queue).enqueue(
        run_job, path, org_id, args, kwargs, description=description or path, job_id=job_id))


@dataclass(frozen=True)
class JobCall:
    """`path(*args)` to run as organization `org_id`."""

    path: str
    args: tuple
    org_id: int | None
    description: str
    job_id: str | None = None


def enqueue_many_now(calls: list[JobCall], queue: str = "default") -> None:
    """Enqueue many jobs in one Redis round trip."""
    _retrying(lambda: get_queue(queue).enqueue_many([
        Queue.prepare_data(run_job, (call.path, call.org_id, call.args, {}),
                           description=call.description, job_id=call.job_id)
        for call in calls]))


def _retrying(call: Callable[[], T]) -> T:
    """`call()`, tried again after each of ENQUEUE_RETRY_DELAYS while Redis does not answer
    (a failover, a restart): a moment's trouble must not lose what was committed."""
    for delay in ENQUEUE_RETRY_DELAYS:
        try:
            return call()
        except REDIS_DOWN as exc:
            log.warning("Redis refused an enqueue (%s); trying again in %ss", exc, delay)
            time.sleep(delay)
    return call()


def in_flight(job_ids: Iterable[str]) -> set[str]:
    """Those of `job_ids` that wait in a queue, wait for their time or run (one round trip)."""
    job_ids = list(job_ids)
    with redis().pipeline(transaction=False) as pipeline:
        for job_id in job_ids:
            pipeline.hget(f"rq:job:{job_id}", "status")
        statuses = pipeline.execute()
    return {job_id for job_id, status in zip(job_ids, statuses, strict=True)
            if status is not None and status.decode() in IN_FLIGHT}


def attempts_left() -> bool:
    """Will the running job run again if it fails for a moment? Never outside a worker."""
    job = get_current_job()
    return job is not None and (job.number_of_retries or 0) < len(RETRY_INTERVALS)


def run_job(path: str, org_id: int | None, args: tuple, kwargs: dict) -> Any:
    """The one entry point of every job: restore the organization, run, commit.

    Each job gets an app context of its own, as a request does: a worker runs job after job
    in one process, and `g` (enabled modules, locale) or the session's identity map must not
    carry one organization's state into the next job.
    """
    func = resolve(path)
    with current_app.app_context(), organization_context(org_id):
        try:
            result = func(*args, **kwargs)
            commit()
        except (*TRANSIENT_ERRORS, TransientError) as exc:
            rollback()
            if not attempts_left():
                raise
            log.warning("job %s failed for a moment (%s: %s); it runs again later", path,
                        type(exc).__name__, exc)
            # RQ (2.1 and later) schedules a job that returns a Retry again, after the next
            # interval; the job keeps its id, so the recovery job sees it in flight.
            return Retry(max=len(RETRY_INTERVALS), interval=list(RETRY_INTERVALS))
        except Exception:
            rollback()
            raise
    return result
