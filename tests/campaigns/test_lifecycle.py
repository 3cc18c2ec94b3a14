"""Pausing, resuming and cancelling a running campaign; what the open pages hear; and what the
recovery job finishes when a runner was lost (in this process: the live tests kill real
ones)."""

from __future__ import annotations

import time
from datetime import timedelta
from itertools import pairwise

import pytest
from sqlalchemy import update

from crm.campaigns import jobs, live
from crm.campaigns.models import CampaignRecipient
from crm.extensions import db, socketio
from crm.foundation.models import User
from crm.models import utcnow
from crm.realtime import rooms_for
from crm.tenancy import organization_context
from crm.whatsapp.models import Message
from tests.campaigns.factories import (
    act,
    cloud_number,
    counts,
    drive,
    fresh,
    make_template,
    recipients,
    start,
    without_swaps,
)
from tests.campaigns.test_pacing import csv_campaign
from tests.factories import make_user, run_jobs, run_recovery
from tests.foundation import ident


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


@pytest.fixture
def emitted(monkeypatch) -> list[tuple[str, dict, str, float]]:
    """What was emitted to Socket.IO rooms: (event, data, room, when: monotonic seconds); the
    data without the fragments the pages swap in (tests/campaigns/test_pages.py checks those)."""
    seen: list[tuple[str, dict, str, float]] = []
    monkeypatch.setattr(socketio, "emit", lambda event, data, to: seen.append(
        (event, without_swaps(data), to, time.monotonic())))
    return seen


def slow_campaign(org, number, count: int = 4):
    """A campaign sending one message a minute: each runner slice sends one, then waits."""
    return csv_campaign(org, number, count, rate_per_minute=1)


def test_nothing_leaves_after_a_pause_returns_and_resume_goes_on_from_there(
        app, org, number, graph, clock):
    campaign = slow_campaign(org, number)
    start(org, campaign)
    run_jobs(app, queues=("campaigns",))
    assert len(graph.sends()) == 1

    act(org, campaign, "pause")
    drive(app, clock)  # the runner's next slice comes, and sees the pause

    assert len(graph.sends()) == 1
    assert fresh(org, campaign).status == "paused"
    assert counts(org, campaign)["queued"] == 3

    act(org, campaign, "resume")
    drive(app, clock)

    assert len(graph.sends()) == 4
    assert sorted(body["to"] for body in graph.sends()) == [f"96650550000{n}" for n in range(4)]
    assert fresh(org, campaign).status == "completed"


def test_cancelling_leaves_what_was_sent_and_skips_the_rest(app, org, number, graph, clock):
    campaign = slow_campaign(org, number)
    start(org, campaign)
    run_jobs(app, queues=("campaigns",))

    act(org, campaign, "cancel")
    drive(app, clock)

    assert [(r.state, r.error_code) for r in recipients(org, campaign)] == [
        ("sent", None), ("skipped", "cancelled"), ("skipped", "cancelled"),
        ("skipped", "cancelled")]
    assert len(graph.sends()) == 1
    assert (fresh(org, campaign).status, counts(org, campaign)["skipped"]) == ("cancelled", 3)


@pytest.mark.parametrize(("action", "status"), [("pause", "completed"), ("resume", "draft"),
                                                ("cancel", "draft")])
def test_a_campaign_moves_only_from_the_statuses_that_allow_it(app, org, number, graph, clock,
                                                               action, status):
    from crm.errors import ConflictError

    campaign = csv_campaign(org, number, 1)
    if status == "completed":
        start(org, campaign)
        drive(app, clock)

    with pytest.raises(ConflictError):
        act(org, campaign, action)

    assert fresh(org, campaign).status == status


def test_the_pages_hear_the_progress_at_most_twice_a_second_and_the_end(
        app, org, number, graph, clock, emitted):
    campaign = csv_campaign(org, number, 30)
    start(org, campaign)
    drive(app, clock)

    room = live.campaigns_room(ident(org))
    progress = [(data, when) for event, data, _to, when in emitted
                if event == "campaignProgress"]
    assert {to for _event, _data, to, _when in emitted} == {room}
    assert progress[0][0] == {"campaignId": ident(campaign), "current": 0, "total": 30}
    assert all(later - earlier >= live.PROGRESS_INTERVAL * 0.95 for earlier, later in
               pairwise(when for _data, when in progress))
    assert [data["current"] for data, _when in progress] == sorted(
        data["current"] for data, _when in progress)
    [(_event, data, _room, _when)] = [e for e in emitted if e[0] == "campaignCompleted"]
    assert data == {"campaignId": ident(campaign), "results": counts(org, campaign)}


def test_only_admins_and_managers_join_the_campaigns_room(org):
    with organization_context(ident(org)):
        roles = {role: live.campaigns_room(ident(org)) in rooms_for(make_user(org, role))
                 for role in ("manager", "agent", "member")}
        roles["admin"] = live.campaigns_room(ident(org)) in rooms_for(
            db.session.get(User, ident(org.admin)))

    assert roles == {"admin": True, "manager": True, "agent": False, "member": False}


# -- what the recovery job finishes ---------------------------------------------------------------

def test_a_running_campaign_that_lost_its_runner_gets_a_new_one(app, org, number, graph, clock):
    """Redis lost the runner's job and key (or its worker was killed): the recovery job starts
    one, and everyone is sent once."""
    campaign = slow_campaign(org, number, 2)
    start(org, campaign)
    run_jobs(app, queues=("campaigns",))
    app.extensions["crm.redis"].flushdb()  # the scheduled slice and the runner's key: gone

    run_recovery(app)
    drive(app, clock)

    assert sorted(body["to"] for body in graph.sends()) == ["966505500000", "966505500001"]
    assert fresh(org, campaign).status == "completed"


def test_a_runner_still_holding_its_campaign_is_left_alone(app, org, number, graph, clock):
    campaign = slow_campaign(org, number, 2)
    start(org, campaign)
    run_jobs(app, queues=("campaigns",))

    run_recovery(app)

    queued = app.extensions["crm.redis"].llen(f"rq:queue:{jobs.QUEUE}")
    assert queued == 0  # only the scheduled next slice: no second runner


def test_a_scheduled_campaign_whose_job_was_lost_starts_when_its_time_has_come(
        app, org, number, graph, clock):
    campaign = csv_campaign(org, number, 1,
                            scheduled_at=(utcnow() + timedelta(hours=1)).isoformat())
    start(org, campaign)
    app.extensions["crm.redis"].flushdb()
    with organization_context(ident(org)):
        db.session.execute(update(type(campaign)).values(
            scheduled_at=utcnow() - timedelta(minutes=1)))

    run_recovery(app)
    drive(app, clock)

    assert len(graph.sends()) == 1
    assert fresh(org, campaign).status == "completed"


def test_a_recipient_left_sending_by_a_dead_runner_follows_its_message(
        app, org, number, graph, clock):
    """The runner died between writing the message and hearing the answer: past the lease,
    the recipient takes its message's status (here the outbox sent it), never a new send."""
    campaign = csv_campaign(org, number, 1)
    start(org, campaign)
    drive(app, clock)
    [person] = recipients(org, campaign)
    with organization_context(ident(org)):
        db.session.execute(update(CampaignRecipient).values(
            state="sending", claimed_until=utcnow() - timedelta(minutes=1)))
        db.session.execute(update(Message).where(Message.id == person.message_id)
                           .values(status="delivered"))

    run_recovery(app)

    assert recipients(org, campaign)[0].state == "delivered"
    assert len(graph.sends()) == 1
