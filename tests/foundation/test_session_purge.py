"""Sessions over for more than SESSION_KEPT (ended, expired, or a browser's idle past its
lifetime) are deleted by a task of the recovery job, in batches, in every organization."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from crm import recovery
from crm.extensions import db
from crm.foundation import jobs
from crm.foundation.models import UserSession
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.factories import make_org
from tests.foundation import ident


def _session(org, kind: str = "browser", **ago: float) -> int:
    """A session of the org's admin whose `ended_at`, `expires_at` or `last_seen_at` (given
    as days ago) lie in the past; its id."""
    with organization_context(ident(org)):
        record = UserSession(organization_id=ident(org), user_id=ident(org.admin), kind=kind,
                             token_hash=f"{kind}-{sorted(ago.items())}-{utcnow().timestamp()}",
                             **{"last_seen_at": utcnow(),
                                **{name: utcnow() - timedelta(days=days)
                                   for name, days in ago.items()}})
        db.session.add(record)
        db.session.flush()
        session_id = record.id
        commit()
        return session_id


def _kept(org, ids: list[int]) -> set[int]:
    with organization_context(ident(org)):
        return set(db.session.scalars(select(UserSession.id).where(UserSession.id.in_(ids))))


def test_sessions_over_for_more_than_thirty_days_are_deleted_by_the_recovery_job(
        app, monkeypatch):
    """Ended or expired more than 30 days ago, or a browser idle for its idle lifetime and 30
    days more: deleted, in every organization and in batches (of 2 here). Ended or idle for
    less, a live API key never used, a live token: kept."""
    monkeypatch.setattr(recovery, "BATCH", 2)
    idle = app.config["SESSION_IDLE_LIFETIME"].days
    first, second = make_org(), make_org()
    gone = {first: [_session(first, ended_at=31), _session(first, ended_at=400),
                    _session(first, last_seen_at=idle + 31),
                    _session(first, "api_token", expires_at=31),
                    _session(first, "api_key", ended_at=45)],
            second: [_session(second, ended_at=31), _session(second, last_seen_at=idle + 40)]}
    kept = {first: [_session(first, ended_at=29), _session(first, last_seen_at=idle + 29),
                    _session(first, "api_token", expires_at=29),
                    _session(first, "api_key", last_seen_at=400)],
            second: [_session(second, last_seen_at=1), _session(second, ended_at=1)]}
    with organization_context(ident(first)):  # an API key never used has no last visit
        db.session.get(UserSession, kept[first][-1]).last_seen_at = None
        commit()

    recovery.run()

    for org in (first, second):
        assert _kept(org, gone[org] + kept[org]) == set(kept[org])


def test_the_purge_runs_at_most_once_an_interval(app):
    """Every recovery run (each 30 s) asking the whole table would be waste: a purge done
    leaves the next ones alone for PURGE_INTERVAL."""
    org = make_org()
    jobs.purge_sessions()
    old = _session(org, ended_at=31)
    jobs.purge_sessions()
    assert _kept(org, [old]) == {old}
    app.extensions["crm.redis"].delete(jobs.PURGE_KEY)  # the interval is over
    jobs.purge_sessions()
    assert _kept(org, [old]) == set()
