"""The recovery job's clock (crm/recovery.py): a worker starting runs it at once, and while
workers run it runs once per interval, however many workers there are."""

from __future__ import annotations

import time

from crm import recovery
from crm.jobs import get_queue
from tests.factories import run_jobs
from tests.live import wait_until


def recovery_runs_waiting() -> int:
    return [job.args[0] for job in get_queue(recovery.QUEUE).jobs].count("crm.recovery:run")


def test_a_worker_starting_runs_the_recovery_job_at_once(app):
    """A worker serving the recovery's queue enqueues a run as it starts; one serving other
    queues only leaves it to those that do."""
    recovery.start(["whatsapp"], burst=True)
    assert recovery_runs_waiting() == 0

    recovery.start(["inbound", recovery.QUEUE], burst=True)
    assert recovery_runs_waiting() == 1


def test_the_clock_runs_the_job_once_per_interval_whatever_the_workers(app):
    """Every worker's clock ticks; within one interval only the first tick enqueues a run, and
    a run still waiting in the queue is not enqueued again."""
    recovery.tick()
    recovery.tick()  # another worker, within the same interval
    assert recovery_runs_waiting() == 1

    app.extensions["crm.redis"].delete(recovery.CLOCK_KEY)  # the interval is over
    recovery.tick()
    assert recovery_runs_waiting() == 1  # the first run has not started yet

    run_jobs(app, queues=(recovery.QUEUE,))
    app.extensions["crm.redis"].delete(recovery.CLOCK_KEY)
    recovery.tick()
    assert recovery_runs_waiting() == 1


def test_a_running_worker_keeps_the_clock_ticking(app, monkeypatch):
    """The clock of a worker that keeps running enqueues a run each interval, in a thread of
    its own, until the worker stops."""
    monkeypatch.setitem(app.config, "RECOVERY_INTERVAL", 0.2)
    clock = recovery.start([recovery.QUEUE])
    try:
        wait_until(lambda: recovery_runs_waiting() == 1, "the first run")
        run_jobs(app, queues=(recovery.QUEUE,))
        wait_until(lambda: recovery_runs_waiting() == 1, "a run one interval later")
    finally:
        clock.stop()
    run_jobs(app, queues=(recovery.QUEUE,))
    time.sleep(0.5)
    assert recovery_runs_waiting() == 0
