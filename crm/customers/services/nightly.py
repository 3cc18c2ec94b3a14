"""Nightly rescoring's schedule: decay changes scores with nothing happening.

An organization's data is visible only to a transaction that carries it, so there is no job
over every organization; each organization has its own chain instead. `keep_nightly_rescore()`
schedules the next run of the `rescore_all` job (crm/customers/jobs.py) with RQ's scheduler
(`enqueue_at`, run by `crm worker`, which starts the scheduler) at 02:00 in the organization's
time zone, plus a few minutes that spread organizations over the night; each nightly run
schedules the next (`continue_chain`). A Redis key makes scheduling idempotent, and the chain
is armed again whenever the organization is used (`list_stages()`), so it survives a Redis
flush.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any

from crm.customers.services.fields import organization_timezone
from crm.jobs import BULK_QUEUE, get_queue, redis, run_job
from crm.keys import key
from crm.models import utcnow
from crm.tenancy import current_organization_id
from crm.transaction import on_commit

log = logging.getLogger("crm.customers")
RESCORE_JOB = "crm.customers.jobs:rescore_all"
_armed: dict[int, datetime] = {}  # organization → next run this process knows is scheduled


def next_night(zone: Any, org_id: int, now: datetime) -> datetime:
    """02:00 in `zone` plus up to two hours by organization, the next time it comes."""
    local = now.astimezone(zone)
    night = datetime.combine(local.date(), time(2), zone) + timedelta(minutes=org_id % 120)
    if night <= local:
        night += timedelta(days=1)
    return night.astimezone(UTC)


def keep_nightly_rescore() -> None:
    """Make sure the current organization's nightly rescoring is scheduled (after commit;
    this process asks Redis at most once a night per organization)."""
    org_id = current_organization_id()
    now = utcnow()
    if org_id is None or _armed.get(org_id, now) > now:
        return
    when = next_night(organization_timezone(), org_id, now)
    on_commit(lambda: _arm(org_id, when))


def continue_chain(org_id: int, scheduled_for: str) -> None:
    """Schedule the night after the run of `scheduled_for`, unless a newer chain replaced it."""
    armed = redis().get(_rescore_key(org_id))
    if armed is not None and armed.decode() != scheduled_for:
        return
    redis().delete(_rescore_key(org_id))
    _armed.pop(org_id, None)
    _arm(org_id, next_night(organization_timezone(), org_id, utcnow()))


def _rescore_key(org_id: int) -> str:
    """Holds when the organization's next nightly run is scheduled for."""
    return key("customers", "rescore-scheduled", org=org_id)


def _arm(org_id: int, when: datetime) -> None:
    ttl = int((when - utcnow()).total_seconds()) + 3600
    if redis().set(_rescore_key(org_id), when.isoformat(), nx=True, ex=max(ttl, 60)):
        get_queue(BULK_QUEUE).enqueue_at(when, run_job, RESCORE_JOB, org_id, (),
                                         {"scheduled_for": when.isoformat()},
                                         description="crm nightly rescore")
        log.info("nightly rescoring of organization %s scheduled at %s", org_id, when)
    _armed[org_id] = when
