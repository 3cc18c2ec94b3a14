"""RQ queues, and the job context: every job runs as the organization that enqueued it.

Jobs are enqueued after commit (`enqueue`), so a rolled-back request starts no work. RQ runs a
job at least once, so every job must be idempotent. The job runs in its own transaction,
committed here; the worker process creates the app once (see worker.py).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue

from crm.tenancy import current_organization_id, organization_context
from crm.transaction import commit, on_commit, rollback

log = logging.getLogger("crm.jobs")


def redis() -> Redis:
    return current_app.extensions["crm.redis"]


def get_queue(name: str = "default") -> Queue:
    return Queue(name, connection=redis(), default_timeout=600)


def _path(target: str | Callable) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def enqueue(target: str | Callable, *args: Any, queue: str = "default", **kwargs: Any) -> None:
    """Enqueue `target(*args, **kwargs)` after commit, as the current organization."""
    org_id = current_organization_id()
    path = _path(target)
    on_commit(lambda: enqueue_now(path, *args, queue=queue, org_id=org_id, **kwargs))


def enqueue_now(path: str, *args: Any, queue: str = "default", org_id: int | None,
                description: str | None = None, **kwargs: Any):
    return get_queue(queue).enqueue(run_job, path, org_id, args, kwargs,
                                    description=description or path)


@dataclass(frozen=True)
class JobCall:
    """`path(*args)` to run as organization `org_id`."""

    path: str
    args: tuple
    org_id: int | None
    description: str


def enqueue_many_now(calls: list[JobCall], queue: str = "default") -> None:
    """Enqueue many jobs in one Redis round trip."""
    get_queue(queue).enqueue_many([
        Queue.prepare_data(run_job, (call.path, call.org_id, call.args, {}),
                           description=call.description) for call in calls])


def run_job(path: str, org_id: int | None, args: tuple, kwargs: dict) -> Any:
    """The one entry point of every job: restore the organization, run, commit.

    Each job gets an app context of its own, as a request does: a worker runs job after job
    in one process, and `g` (enabled modules, locale) or the session's identity map must not
    carry one organization's state into the next job.
    """
    module_name, _, attr = path.partition(":")
    func = importlib.import_module(module_name)
    for part in attr.split("."):
        func = getattr(func, part)
    with current_app.app_context(), organization_context(org_id):
        try:
            result = func(*args, **kwargs)
            commit()
        except Exception:
            rollback()
            raise
    return result
