"""The kernel's upkeep, run as tasks of the recovery job (crm/recovery.py TASKS).

Sessions over for more than SESSION_KEPT are deleted: ended (logout, a revoked key), expired
(an API token's JWT) or, for a browser, idle past SESSION_IDLE_LIFETIME. Nothing reads them
again: the profile and the API keys page list live sessions only, and the audit log names a
key by the name its entry kept.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete

from crm import recovery
from crm.extensions import db
from crm.foundation.models import UserSession
from crm.jobs import redis
from crm.keys import key
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.transaction import commit

log = logging.getLogger("crm.foundation")

SESSION_KEPT = timedelta(days=30)
# The recovery job runs every 30 s; looking for old sessions once an hour is enough.
PURGE_INTERVAL = timedelta(hours=1)
PURGE_KEY = key("foundation", "sessions-purged")


def purge_sessions() -> int:
    """Delete the sessions over for more than SESSION_KEPT, the recovery's BATCH at a time (the
    oldest first), each organization's share of a batch in its own transaction; at most once
    per PURGE_INTERVAL, whatever the workers. How many were deleted."""
    if not redis().set(PURGE_KEY, 1, nx=True, ex=PURGE_INTERVAL):
        return 0
    over_before = utcnow() - SESSION_KEPT
    seen_before = over_before - current_app.config["SESSION_IDLE_LIFETIME"]
    deleted = 0
    while True:
        found = recovery.stuck("wasl_user_sessions_over", over_before, seen_before)
        batch = 0
        for org_id, ids in found.items():
            with organization_context(org_id):
                batch += db.session.execute(
                    delete(UserSession).where(UserSession.id.in_(ids))).rowcount
                commit()
        deleted += batch
        if batch == 0 or sum(map(len, found.values())) < recovery.BATCH:
            break
    if deleted:
        log.info("%d sessions over for more than %s deleted", deleted, SESSION_KEPT)
    return deleted
