"""Ticketing's timers: one job wakes at the earliest SLA deadline of all organizations.

Each ticket keeps its next deadline (`next_deadline_at`: a warning, a breach, an escalation,
closing a solved ticket) in a column with a global partial index. `process_due` asks a
SECURITY DEFINER function for the (organization, ticket) pairs due now, oldest first, BATCH at a
time, handles each organization's as that organization (tickets another worker holds are
skipped: it does them), and schedules itself for the next deadline. So the cost grows with
what is due, never with how many tickets are open.

Only one timer job waits: SCHEDULED_KEY holds the moment it waits for. A deadline earlier than
that (a new urgent ticket) takes the key and schedules a job for itself, and the later job is
taken off RQ's schedule. The key outlives its moment by GRACE only, so a job lost with RQ's
scheduler (a worker restarted: RQ takes minutes to hand its scheduler to another) does not
block the next one. Meanwhile the recovery job (crm/recovery.py, every RECOVERY_INTERVAL
seconds in every interactive worker) runs `sweep`, which does what is due itself: a breach is
seen within that interval even with no scheduler at all.

`recompute_clocks` computes an organization's open tickets again after a settings change
(policies, hours, holidays, time zone), in batches.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from rq.registry import ScheduledJobRegistry
from sqlalchemy import text

from crm.extensions import db
from crm.jobs import get_queue, redis, run_job
from crm.keys import key
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets.services import settings, tickets
from crm.transaction import commit, on_commit_collect, rollback

log = logging.getLogger("crm.tickets.jobs")

QUEUE = "default"
BATCH = 500
# Rounds of BATCH a run takes at most before it leaves the rest to the next run.
MAX_ROUNDS = 200
SCHEDULED_KEY = key("tickets", "sla", "scheduled")
JOB_PREFIX = "tickets-sla-"
GRACE = timedelta(minutes=2)
_WATCHED = "tickets.deadlines"
# Take the key when it is free or holds a later moment; answer the moment it held ("" when
# none), or nil when an earlier or equal moment already waits.
_TAKE = """
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) <= tonumber(ARGV[1]) then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return held or ''
"""


def watch(deadline: datetime | None) -> None:
    """A ticket's next deadline was set: after commit, make sure a timer wakes for it."""
    if deadline is not None:
        on_commit_collect(_WATCHED, deadline, lambda deadlines: schedule(min(deadlines)))


def schedule(deadline: datetime) -> None:
    """Have the timer job run at `deadline`, unless it already runs at or before then."""
    moment = int(deadline.timestamp() * 1000)
    wait = moment - int(datetime.now(UTC).timestamp() * 1000)
    held = redis().eval(_TAKE, 1, SCHEDULED_KEY, moment,
                        max(wait, 0) + int(GRACE.total_seconds() * 1000))
    if held is None:
        return
    queue = get_queue(QUEUE)
    arguments = (run_job, f"{__name__}:process_due", None, (), {})
    options = {"job_id": f"{JOB_PREFIX}{moment}", "description": "tickets: SLA timer"}
    if wait <= 0:
        queue.enqueue(*arguments, **options)
    else:
        queue.enqueue_at(deadline, *arguments, **options)
    if held:
        ScheduledJobRegistry(queue=queue).remove(f"{JOB_PREFIX}{held.decode()}",
                                                 delete_job=True)


def schedule_next() -> None:
    """Schedule the timer for the earliest deadline of all organizations (if any)."""
    deadline = db.session.scalar(text("SELECT wasl_tickets_next_deadline()"))
    if deadline is not None:
        schedule(deadline)


def process_due(now: datetime | None = None) -> int:
    """The timer job: do what is due, then wait for the next deadline. How many tickets."""
    redis().delete(SCHEDULED_KEY)
    done = _process(now)
    schedule_next()
    return done


def sweep() -> None:
    """A task of the recovery job: what is due, done even if no timer job woke for it; the
    timer scheduled again; and the year ahead of holidays topped up where it ends soon."""
    _process(None)
    schedule_next()
    top_up_holidays()


def _process(now: datetime | None) -> int:
    done = 0
    for _round in range(MAX_ROUNDS):
        moment = now or utcnow()
        found = db.session.execute(text("SELECT organization_id, id FROM wasl_tickets_due("
                                        ":now, :limit)"), {"now": moment, "limit": BATCH}).all()
        by_organization: dict[int, list[int]] = defaultdict(list)
        for org_id, ticket_id in found:
            by_organization[org_id].append(ticket_id)
        done_now = 0
        for org_id, ids in by_organization.items():
            with organization_context(org_id):
                try:
                    done_now += tickets.process_due(ids, moment)
                    commit()
                except Exception:
                    rollback()
                    log.exception("SLA deadlines of organization %s failed", org_id)
        done += done_now
        if len(found) < BATCH or done_now == 0:
            break
    if done:
        log.info("%d tickets' SLA deadlines handled", done)
    return done


def top_up_holidays() -> None:
    """Fill the holidays of each organization whose known year ahead ends within a year."""
    until = utcnow().date() + timedelta(days=365)
    for org_id, _settings_id in db.session.execute(text(
            "SELECT organization_id, id FROM wasl_ticket_holidays_due(:until, :limit)"),
            {"until": until, "limit": BATCH}).all():
        with organization_context(org_id):
            try:
                settings.top_up_holidays()
                commit()
            except Exception:
                rollback()
                log.exception("holidays of organization %s not topped up", org_id)


def recompute_clocks() -> None:
    """Compute the current organization's open tickets' clocks again, BATCH at a time."""
    after = 0
    while (after := tickets.recompute_clocks(after, BATCH)) is not None:
        commit()
