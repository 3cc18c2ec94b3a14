"""Publish/subscribe between modules, delivered only after the publishing transaction commits.

A module publishes what happened (`publish("message.received", {...})`); others subscribe
without the publisher knowing them. A subscriber runs in-process right after commit (quick
reactions) or, with `job=True`, as an RQ job (slow ones). Either way it runs as the publishing
organization, in its own transaction, and one failing subscriber never stops the others.

The convention: each module's `events.py` is its catalogue of hooks, so a new module finds
them in one file. `PUBLISHES` maps each event the module publishes to the keys of its payload
(ids and plain values, never objects: a job subscriber receives the payload as JSON), with a
comment saying when it happens; `LISTENS` maps each event it subscribes to (in events.py, or in
live.py for what it pushes to open pages) to what it does. Names are `<noun>.<past verb>`. A
payload need not name its organization: the subscriber runs as the publishing one.
tests/test_event_catalogue.py fails when a module publishes or listens to an event its
catalogue does not list, or publishes a payload with other keys than it says.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from crm.jobs import JobCall, enqueue_many_now
from crm.tenancy import current_organization_id, organization_context
from crm.transaction import commit, on_commit_collect, rollback

log = logging.getLogger("crm.events")

Payload = tuple[str, ...]  # the keys of an event's payload, in a module's PUBLISHES


@dataclass(frozen=True)
class Subscriber:
    func: Callable[[dict], None]
    as_job: bool

    @property
    def path(self) -> str:
        return f"{self.func.__module__}:{self.func.__qualname__}"


_subscribers: dict[str, list[Subscriber]] = defaultdict(list)


def subscribe(name: str, *, job: bool = False) -> Callable:
    """Register the decorated function for event `name`; it receives the payload dict."""

    def decorator(func: Callable[[dict], None]) -> Callable[[dict], None]:
        if job and "<locals>" in func.__qualname__:
            # A worker finds a job's function by its import path; a nested one has none.
            raise ValueError(f"job subscriber {func.__qualname__} must be a module-level function")
        _subscribers[name].append(Subscriber(func, job))
        return func

    return decorator


def publish(name: str, payload: dict) -> None:
    """Announce `name` to subscribers once the current transaction commits."""
    on_commit_collect("events", (name, payload, current_organization_id()), deliver)


def deliver(published: list[tuple[str, dict, int | None]]) -> None:
    """Run the in-process subscribers of each event, in order; enqueue the job subscribers of
    them all at once."""
    jobs = []
    for name, payload, org_id in published:
        for subscriber in list(_subscribers.get(name, ())):
            if subscriber.as_job:
                jobs.append(JobCall(subscriber.path, (payload,), org_id, name))
            else:
                run_subscriber(subscriber.func, payload, org_id)
    if not jobs:
        return
    try:
        enqueue_many_now(jobs)
    except Exception:  # Redis unreachable: the in-process subscribers still got the events
        log.exception("could not enqueue subscriber jobs (%d)", len(jobs))


def run_subscriber(func: Callable[[dict], None], payload: dict, org_id: int | None) -> None:
    with organization_context(org_id):
        try:
            func(payload)
            commit()
        except Exception:
            rollback()
            log.exception("subscriber %s failed", func.__qualname__)
