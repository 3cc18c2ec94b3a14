"""What WhatsApp's refusals do to a campaign, by Graph error code (the fake Graph API answers
with Meta's error objects): the number slowed down, one person retried later, a person failed
with the reason, or the campaign paused with the admins told why."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.campaigns import live, pacing, services
from crm.extensions import db, socketio
from crm.foundation.models import AuditEntry
from crm.tenancy import organization_context
from tests.campaigns.factories import (
    cloud_number,
    counts,
    drive,
    fresh,
    make_template,
    recipients,
    sent_to,
    start,
    whatsapp_says,
    without_swaps,
)
from tests.campaigns.test_pacing import csv_campaign
from tests.factories import run_jobs
from tests.foundation import ident

FIRST, SECOND, THIRD = "+966505500000", "+966505500001", "+966505500002"


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


@pytest.fixture
def emitted(monkeypatch) -> list[tuple[str, dict, str]]:
    """What was emitted to Socket.IO rooms: (event, data, room); the data without the
    fragments the pages swap in (tests/campaigns/test_pages.py checks those)."""
    seen: list[tuple[str, dict, str]] = []
    monkeypatch.setattr(socketio, "emit", lambda event, data, to: seen.append(
        (event, without_swaps(data), to)))
    return seen


def by_phone(org, campaign) -> dict:
    return {r.phone: r for r in recipients(org, campaign)}


def test_130429_slows_the_whole_number_down_and_the_person_is_sent_later(
        app, org, number, graph, clock):
    """Meta's throughput was reached: nobody is sent for a while (backoff with jitter), then
    the refused person is sent like the others; every person gets one message."""
    graph.next_errors = [130429]
    campaign = csv_campaign(org, number, 3)
    refused_at = clock.now()  # the first send leaves at once

    start(org, campaign)
    drive(app, clock)

    people = by_phone(org, campaign)
    assert sent_to(graph) == [FIRST, SECOND, THIRD, FIRST]  # the first try was refused
    assert {r.state for r in people.values()} == {"sent"}
    assert people[FIRST].attempts == 1  # the number's fault, not the person's
    assert people[SECOND].attempted_at.timestamp() - refused_at >= pacing.PENALTY_FIRST * 0.5


def test_131056_delays_only_that_person_four_seconds(app, org, number, graph, clock):
    """Too many messages to one person: the others go on at once; that person is tried again
    after 4 s (then 16, 64...)."""
    graph.next_errors = [131056]
    campaign = csv_campaign(org, number, 3)

    start(org, campaign)
    drive(app, clock)

    people = by_phone(org, campaign)
    assert sent_to(graph) == [FIRST, SECOND, THIRD, FIRST]
    assert people[FIRST].state == "sent"
    assert people[FIRST].attempts == 2
    assert (people[FIRST].attempted_at - people[THIRD].attempted_at).total_seconds() >= 3.5


@pytest.mark.parametrize(("code", "reason"), [
    (131026, "Unable to deliver message"),
    (131047, "more than 24 hours have passed"),
    (132001, "does not exist"),
])
def test_refusals_about_the_person_or_template_fail_them_with_the_reason(
        app, org, number, graph, clock, code, reason):
    """Undeliverable, re-engagement, a template error: that person fails with WhatsApp's
    reason and is not tried again; the others are sent."""
    graph.next_errors = [code]
    campaign = csv_campaign(org, number, 2)

    start(org, campaign)
    drive(app, clock)

    people = by_phone(org, campaign)
    assert sent_to(graph) == [FIRST, SECOND]
    assert (people[FIRST].state, people[FIRST].error_code) == ("failed", str(code))
    assert reason in people[FIRST].error_reason
    assert counts(org, campaign)["failed"] == 1
    assert fresh(org, campaign).status == "completed"


@pytest.mark.parametrize("code", [131048, 368, 131031, 190])
def test_refusals_that_blame_the_number_pause_the_campaign_and_tell_the_admins(
        app, org, number, graph, clock, emitted, code):
    """Spam limit, policy block, locked account, invalid token: nothing more is sent; the
    person refused waits in the queue for the resume; the admins' pages hear why."""
    graph.next_errors = [code]
    campaign = csv_campaign(org, number, 3)

    start(org, campaign)
    drive(app, clock)

    stored = fresh(org, campaign)
    assert (stored.status, stored.pause_reason) == ("paused", str(code))
    assert sent_to(graph) == [FIRST]
    assert {r.state for r in recipients(org, campaign)} == {"queued"}
    assert ("campaignStatus", {"campaignId": ident(campaign), "status": "paused",
                               "reason": str(code), "results": counts(org, campaign)},
            live.campaigns_room(ident(org))) in emitted
    with organization_context(ident(org)):
        assert services.pause_reason_text(stored)
        paused = db.session.scalar(select(AuditEntry).where(AuditEntry.action ==
                                                             "campaign.paused"))
        assert (paused.actor_id, paused.details["reason"]) == (None, str(code))


def test_a_campaign_pauses_itself_when_over_a_fifth_of_its_last_50_sends_failed(
        app, org, number, graph, clock):
    """Eleven failures of 50 pause it, saying so; the rest waits."""
    graph.next_errors = [131026] * 11
    campaign = csv_campaign(org, number, 15)

    start(org, campaign)
    drive(app, clock)

    stored = fresh(org, campaign)
    assert (stored.status, stored.pause_reason) == ("paused", "failure_rate")
    assert len(graph.sends()) == 11
    assert counts(org, campaign)["queued"] == 4


def test_a_failure_told_by_the_status_webhook_that_blames_the_number_pauses_it_too(
        app, client, org, number, graph, clock):
    """A spam-limit failure arrives later, by webhook, while the campaign runs (one message a
    minute): it pauses, and the next slice sends nothing."""
    campaign = csv_campaign(org, number, 2, rate_per_minute=1)
    start(org, campaign)
    run_jobs(app, queues=("campaigns",))  # the first send; the next waits a minute
    [first, _second] = recipients(org, campaign)

    whatsapp_says(client, org, number, [(first.provider_message_id, "failed", first.message_id)],
                  error_code=131048)
    drive(app, clock)

    assert (fresh(org, campaign).status, fresh(org, campaign).pause_reason) == ("paused",
                                                                               "131048")
    assert [r.state for r in recipients(org, campaign)] == ["failed", "queued"]
    assert len(graph.sends()) == 1


def test_a_cut_off_send_is_unknown_until_whatsapp_says_and_is_never_sent_again(
        app, client, org, number, graph, clock):
    """The connection dropped after the request left: the person is `unknown`, the campaign
    completes without sending them again, and the status webhook settles it."""
    graph.drop_connection = True
    campaign = csv_campaign(org, number, 1)

    start(org, campaign)
    drive(app, clock)
    graph.drop_connection = False

    [person] = recipients(org, campaign)
    assert person.state == "unknown"
    assert len(graph.sends()) == 1
    assert fresh(org, campaign).status == "completed"

    whatsapp_says(client, org, number, [("wamid.LATE1", "delivered", person.message_id)])

    assert recipients(org, campaign)[0].state == "delivered"
    assert counts(org, campaign)["unknown"] == 0
    assert counts(org, campaign)["delivered"] == 1
