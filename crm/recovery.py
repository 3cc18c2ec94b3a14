"""The recovery job: what an outage or a killed process left behind is found and finished.

Everything that leaves the building goes through a database outbox, and the database is the
truth; Redis only holds the jobs that act on it. A job can still be lost: Redis refused it
after the commit (down, failing over), came back without its data, or the worker running it
was killed. So every RECOVERY_INTERVAL seconds one job asks each outbox for what is stuck:

- rows `queued` for longer than RECOVERY_QUEUED_AFTER seconds whose job is not waiting or
  running (`jobs.in_flight`, by the job's id) are enqueued again. A send enqueued twice is sent
  once all the same: the send claims its row, and a second run finds it claimed;
- rows `sending` past their lease, whose job died mid-send, are settled as each outbox
  decides (a WhatsApp message becomes `unknown`, for the status webhook to settle; an email
  fails, saying it may have arrived); never sent again;
- webhook deliveries kept and not applied are drained, whatever the drain mark says;
- SLA deadlines that came due are handled, even when no timer job woke for them (RQ's
  scheduler lost with a restarted worker), so a breach is seen within an interval;
- sessions over for more than 30 days are deleted (at most once an hour).

         "crm.mail:recover_outbox", "crm.billing.jobs:recover_events",
         "crm.billing.usage:report_usage", "crm.tickets.jobs:sweep",
         "crm.campaigns.jobs:keep_running", "crm.foundation.jobs:purge_sessions")

The clock: every worker serving QUEUE enqueues a run as it starts, then keeps a thread that
ticks every interval; a Redis key taken with NX lets only the first tick of each interval, of
all workers, enqueue one. A thread in each worker, rather than a job that schedules the next
one on RQ's scheduler, because that chain would live in Redis: a Redis that came back empty,
the case this job exists for, would have lost it too.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import func, or_, select, text

from crm.extensions import db
from crm.jobs import JobCall, enqueue_many_now, enqueue_now, in_flight, redis
from crm.keys import key
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.transaction import commit, rollback

log = logging.getLogger("crm.recovery")

QUEUE = "default"
JOB_ID = "crm-recovery"
CLOCK_KEY = key("recovery", "clock")
BATCH = 1000  # rows of each kind looked at per run (the oldest first)
# What each run does, in order: functions without arguments, each in its own transactions.
TASKS = ("crm.whatsapp.jobs:recover_ingest", "crm.whatsapp.jobs:recover_outbox",
         "crm.mail:recover_outbox", "crm.billing.jobs:recover_events",
         "crm.billing.usage:report_usage", "crm.tickets.jobs:sweep",
         "crm.campaigns.jobs:keep_running", "crm.foundation.jobs:purge_sessions")


def run() -> None:
    """Run every task of TASKS (the job); one failing does not stop the others."""
    for task in TASKS:
        module, _, name = task.partition(":")
        try:
            getattr(importlib.import_module(module), name)()
        except Exception:
            rollback()
            log.exception("recovery task %s failed", task)


# -- what the tasks share ------------------------------------------------------------------------

def queued_before() -> datetime:
    """Rows queued before this have waited long enough for their job to be presumed lost."""
    return utcnow() - timedelta(seconds=current_app.config["RECOVERY_QUEUED_AFTER"])


def stuck(function: str, *arguments: object) -> dict[int, list[int]]:
    """The ids the SECURITY DEFINER function `function(*arguments, BATCH)` returns, by
    organization."""
    values = {f"a{n}": value for n, value in enumerate((*arguments, BATCH))}
    placeholders = ", ".join(f":{name}" for name in values)
    rows = db.session.execute(
        text(f"SELECT organization_id, id FROM {function}({placeholders})"), values)
    found: dict[int, list[int]] = defaultdict(list)
    for org_id, row_id in rows:
        found[org_id].append(row_id)
    return found


def enqueue_again(rows: dict[int, list[int]], path: str, queue: str,
                  job_id: Callable[[int], str]) -> None:
    """Enqueue `path(id)` as each row's organization, unless the row's job (`job_id(id)`)
    waits or runs."""
    found = [(org_id, row_id) for org_id, ids in rows.items() for row_id in ids]
    waiting = in_flight(job_id(row_id) for _org_id, row_id in found)
    calls = [JobCall(path, (row_id,), org_id, f"{path} (recovered)", job_id(row_id))
             for org_id, row_id in found if job_id(row_id) not in waiting]
    if calls:
        enqueue_many_now(calls, queue=queue)
        log.warning("%d jobs of %s had been lost; enqueued again", len(calls), path)


def settle_lease_over(model: type, function: str, settle: Callable[[object], None]) -> None:
    """Call `settle(row)` on each row of `model` that the SECURITY DEFINER `function` finds
    `sending` past its lease, as the row's organization, with the row locked and read again:
    a slow send may have finished since it was found."""
    for org_id, ids in stuck(function).items():
        with organization_context(org_id):
            for row in db.session.scalars(
                    select(model).where(model.id.in_(ids), model.status == "sending",
                                        or_(model.claimed_until.is_(None),
                                            model.claimed_until < func.statement_timestamp()))
                    .with_for_update(skip_locked=True)):
                settle(row)
            commit()


# -- the clock ---------------------------------------------------------------------------------

def request_run() -> None:
    """Enqueue a run now, unless one waits or runs already."""
    if not in_flight([JOB_ID]):
        enqueue_now(f"{__name__}:run", queue=QUEUE, org_id=None, job_id=JOB_ID,
                    description="recovery")


def tick() -> None:
    """Enqueue a run if no worker has in this interval."""
    interval_ms = int(current_app.config["RECOVERY_INTERVAL"] * 1000)
    # A little under the interval, so the next tick of the same worker finds it free.
    if redis().set(CLOCK_KEY, 1, nx=True, px=max(1, interval_ms * 9 // 10)):
        request_run()


class Clock:
    """A worker's thread that calls `tick` every RECOVERY_INTERVAL seconds until stopped."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recovery-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self._app.config["RECOVERY_INTERVAL"]
        while not self._stopped.wait(interval):
            with self._app.app_context():
                try:
                    tick()
                except Exception as exc:  # noqa: BLE001 - Redis down, say: tick again later
                    log.warning("recovery clock: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def start(queues: Iterable[str], burst: bool = False) -> Clock | None:
    """At a worker's start: run the recovery now, then keep its clock (not in burst mode,
    where the worker stops once its queues are empty). Only workers serving QUEUE do."""
    if QUEUE not in queues:
        return None
    request_run()
    return None if burst else Clock(current_app._get_current_object())
