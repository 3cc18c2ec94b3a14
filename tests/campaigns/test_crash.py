"""Real `crm worker` processes run campaigns against the fake Graph API: killed with SIGKILL
mid-send, or left without Redis for a moment, the campaign carries on by itself and every
person is sent exactly once (the fake Graph API counts; the one whose send was cut off is
`unknown`, never sent again); a pause through the live server's API stops the sends before it
answers.

The data is the live server's (tests/live.py); the workers' recovery clock and age, and the
runners' lease, are shortened to seconds so that what heals in production within a minute
heals here within a few seconds.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

from crm import embedded
from crm.campaigns import services
from crm.campaigns.models import Campaign, CampaignRecipient
from crm.extensions import db
from crm.foundation.models import Organization, User
from crm.whatsapp.models import Message
from tests.campaigns.factories import ACCOUNT_ID, make_template
from tests.conftest import ROOT
from tests.factories import bearer
from tests.live import TIMEOUT, LiveServer, wait_until
from tests.test_redis_outage import process
from tests.whatsapp.factories import make_profile
from tests.whatsapp.fake_graph import TOKEN, FakeGraph

pytestmark = pytest.mark.live
PEOPLE = 40
FIRST = 5_700_000  # the people's numbers: 05 0570 0000 and on (the live database is shared)
SETTINGS = {"RECOVERY_INTERVAL": "1", "RECOVERY_QUEUED_AFTER": "1",
            "CAMPAIGN_RUNNER_LEASE": "2"}


@dataclass(frozen=True)
class Running:
    org_id: int
    campaign_id: int
    phones: list[str]


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph()
    yield fake
    fake.stop()


def a_campaign(live_server: LiveServer, first: int, rate_per_minute: int = 600) -> Running:
    """A started campaign of PEOPLE numbers (an uploaded list) on a cloud number, at 10 a
    second."""
    account = live_server.make_account()
    phones = [f"+9665{n:08d}" for n in range(first, first + PEOPLE)]
    with live_server.transaction(account.organization_id):
        org = db.session.get(Organization, account.organization_id)
        admin = db.session.get(User, account.user_id)
        org.admin = admin
        profile = make_profile(org, "cloud", access_token=TOKEN,
                               business_account_id=ACCOUNT_ID,
                               phone_number_id=f"1065{first:011d}")
        make_template(org, profile)
        campaign = services.create_campaign(admin, {
            "name": "Crash test", "profile_id": profile.id, "rate_per_minute": rate_per_minute,
            "message": {"template": {"name": "spring_offer", "language": "ar",
                                     "parameters": ["{name}", "x"]}}})
        db.session.flush()
        services.upload_audience(admin, campaign, FileStorage(
            io.BytesIO(("phone\n" + "\n".join(phones)).encode()), filename="people.csv"))
        services.start_campaign(admin, campaign)
        return Running(account.organization_id, campaign.id, phones)


@contextmanager
def worker(live_server: LiveServer, graph: FakeGraph, log: Path, **environment: str
           ) -> Iterator[subprocess.Popen]:
    """`crm worker` on every queue, as `crm up` runs them, until the block ends (SIGTERM)."""
    env = live_server.environment() | {"WHATSAPP_GRAPH_URL": graph.url} | SETTINGS | environment
    with open(log, "a") as output:
        process = subprocess.Popen([sys.executable, "-m", "crm", "worker"], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def states(live_server: LiveServer, running: Running) -> Counter:
    with live_server.transaction(running.org_id):
        return Counter(dict(db.session.execute(
            select(CampaignRecipient.state, func.count())
            .where(CampaignRecipient.campaign_id == running.campaign_id)
            .group_by(CampaignRecipient.state)).all()))


def status(live_server: LiveServer, running: Running) -> str:
    with live_server.transaction(running.org_id):
        return db.session.scalar(select(Campaign.status).where(
            Campaign.id == running.campaign_id))


def settled(live_server: LiveServer, running: Running) -> bool:
    """Nobody is left to send: everyone sent, or (one killed mid-request) `sending` with a
    message that was on its way (the outbox makes it `unknown` once its lease is over)."""
    now = states(live_server, running)
    return now["queued"] == 0 and now["sent"] + now["sending"] + now["unknown"] == PEOPLE


def cut_off(live_server: LiveServer, running: Running) -> list[str]:
    """The people whose message was on its way when its sender died."""
    with live_server.transaction(running.org_id):
        return list(db.session.scalars(
            select(CampaignRecipient.phone).join(Message, Message.id ==
                                                 CampaignRecipient.message_id)
            .where(CampaignRecipient.campaign_id == running.campaign_id,
                   CampaignRecipient.state.in_(("sending", "unknown")),
                   Message.status.in_(("sending", "unknown")))))


def assert_each_sent_once(live_server: LiveServer, running: Running, graph: FakeGraph) -> None:
    """Nobody got two messages; everybody got one, but a person whose send was cut off
    mid-request by the kill (that one may or may not have reached WhatsApp: never resent)."""
    sent = Counter(f"+{body['to']}" for body in graph.sends())
    assert [phone for phone, times in sent.items() if times > 1] == []
    missing = set(running.phones) - set(sent)
    assert missing <= set(cut_off(live_server, running)), missing
    assert len(missing) <= 1


def test_a_worker_killed_mid_send_is_replaced_and_nobody_is_sent_twice(
        live_server, graph, tmp_path):
    """The worker is killed while WhatsApp has a message but has not answered yet: that
    person's message is `unknown` (never sent again); a new worker sends everyone else,
    once each. (One send on its way at a time, so that exactly one is cut off; several:
    the next test.)"""
    running = a_campaign(live_server, FIRST)
    graph.delay = 0.5  # each send is answered after half a second: the kill lands mid-request

    with worker(live_server, graph, tmp_path / "first.log",
                CAMPAIGN_SENDS_IN_FLIGHT="1") as first:
        wait_until(lambda: len(graph.sends()) >= 5, "five sends", 60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    killed_at = len(graph.sends())
    in_flight = f"+{graph.sends()[-1]['to']}"
    graph.delay = 0

    with worker(live_server, graph, tmp_path / "second.log"):
        wait_until(lambda: settled(live_server, running), "the campaign settling", 90)
        time.sleep(2)  # more runs of the recovery job: nothing is sent again

    assert killed_at < PEOPLE, "the campaign ended before the kill: nothing was tested"
    assert_each_sent_once(live_server, running, graph)
    assert len(graph.sends()) == PEOPLE
    assert cut_off(live_server, running) == [in_flight]


def test_a_worker_killed_with_several_sends_on_their_way_sends_none_of_them_again(
        live_server, graph, tmp_path):
    """WhatsApp answering slowly, the worker has several sends on their way at once (the
    pace needs them) when it is killed: each of those is `unknown`, never sent again, and a
    new worker sends everyone else once."""
    running = a_campaign(live_server, FIRST + 3 * PEOPLE)
    graph.delay = 0.5

    with worker(live_server, graph, tmp_path / "first.log") as first:
        wait_until(lambda: len(graph.sends()) >= 5, "five sends", 60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    killed_at = len(graph.sends())
    graph.delay = 0
    with worker(live_server, graph, tmp_path / "second.log"):
        wait_until(lambda: settled(live_server, running), "the campaign settling", 90)
        time.sleep(2)  # more runs of the recovery job: nothing is sent again

    assert killed_at < PEOPLE, "the campaign ended before the kill: nothing was tested"
    sent = Counter(f"+{body['to']}" for body in graph.sends())
    assert [phone for phone, times in sent.items() if times > 1] == []
    assert set(sent) == set(running.phones)  # the cut-off ones had reached WhatsApp
    assert 1 < len(cut_off(live_server, running)) <= killed_at


def test_a_campaign_carries_on_after_redis_restarts_empty(live_server, graph, tmp_path):
    """Redis stops mid-campaign and comes back holding nothing (no jobs, no runner key, no
    buckets): the worker (started again when it quits, as `crm up` does) and the recovery job
    take the campaign up again, and nobody is sent twice."""
    redis = embedded.start_redis(tmp_path, persist=False)
    running = a_campaign(live_server, FIRST + PEOPLE)
    environment = (live_server.environment() | {"WHATSAPP_GRAPH_URL": graph.url} | SETTINGS
                   | {"REDIS_URL": redis.url})
    try:
        with process(["worker"], environment, tmp_path / "worker.log", supervised=True):
            wait_until(lambda: len(graph.sends()) >= 10, "ten sends", 60)
            embedded.stop_redis(redis)
            before_restart = len(graph.sends())
            time.sleep(1)
            redis = embedded.start_redis(tmp_path, persist=False)
            wait_until(lambda: settled(live_server, running), "the campaign settling", 120)
            time.sleep(2)  # more runs of the recovery job: nothing is sent again
    finally:
        embedded.stop_redis(redis)

    assert before_restart < PEOPLE, "the campaign ended before the outage: nothing was tested"
    assert_each_sent_once(live_server, running, graph)


def test_no_send_leaves_after_a_pause_returns(live_server, graph, tmp_path):
    """A worker sends ten a second; the admin's pause (POST /api/campaigns/<id>/pause to the
    live server) answers within a second, and from then on the fake Graph API hears nothing
    more. Resuming sends the rest, once each."""
    running = a_campaign(live_server, FIRST + 2 * PEOPLE)
    with live_server.transaction(running.org_id):
        token = bearer(db.session.get(User, db.session.scalar(
            select(Campaign.created_by_id).where(Campaign.id == running.campaign_id))))
    url = f"{live_server.url}/api/campaigns/{running.campaign_id}"

    with worker(live_server, graph, tmp_path / "worker.log"):
        wait_until(lambda: len(graph.sends()) >= 5, "five sends", 60)
        began = time.monotonic()
        paused = requests.post(f"{url}/pause", headers=token, timeout=TIMEOUT)
        took = time.monotonic() - began
        after_pause = len(graph.sends())
        time.sleep(2)
        assert (paused.status_code, paused.json()["status"]) == (200, "paused")
        assert len(graph.sends()) == after_pause
        assert took < 1.0
        assert after_pause < PEOPLE

        resumed = requests.post(f"{url}/resume", headers=token, timeout=TIMEOUT)
        assert resumed.json()["status"] == "running"
        wait_until(lambda: status(live_server, running) == "completed", "the campaign ending",
                   60)

    assert_each_sent_once(live_server, running, graph)
    assert len(graph.sends()) == PEOPLE
