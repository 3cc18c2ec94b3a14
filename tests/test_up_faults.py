"""`crm up` keeps the stack up when one of its processes dies: the dead one is started again
and nothing else stops; only a process that keeps dying stops it all, saying why. A bulk job
runs beside the replies, never in front of them.

Real processes killed with SIGKILL, on one `crm up` shared by the module, started outside the
repository with only the `crm` package importable (as an installed package is). Sends go to
the local fake Graph API, so a send the restarted worker makes is seen arriving.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from redis import Redis

from crm.embedded import _is_listening
from crm.foundation.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.conftest import ROOT, free_port
from tests.crm_up import Up, log_in, running_crm_up, serving, start_up, stop
from tests.live import csrf_token, wait_until
from tests.whatsapp.fake_graph import FakeGraph
from tests.whatsapp.test_cloud import payload, signature

pytestmark = [pytest.mark.processes, pytest.mark.xdist_group("crm-up")]

NUMBER_ID = "106540352242922"
ACCESS_TOKEN = "EAAG-fault-test-access-token"
APP_SECRET = "fault-test-app-secret"
RECOVERY = 120.0  # a restart after backoff, then a process starting on a busy machine
INTERACTIVE = ("worker", "inbound")  # the command line of the worker that sends replies


def package_only(directory: Path) -> str:
    """A PYTHONPATH where `crm` is importable and nothing else of the repository is."""
    (directory / "crm").symlink_to(ROOT / "crm")
    return str(directory)


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[Path]:
    """A working directory outside the repository, whose path holds only the package."""
    directory = Path(tempfile.mkdtemp(prefix="wasl-elsewhere-"))
    yield directory
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph()
    fake.add_number(NUMBER_ID, token=ACCESS_TOKEN)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def stack(elsewhere, graph) -> Iterator[Up]:
    """`crm up` started outside the repository, sending WhatsApp through the fake Graph API."""
    with running_crm_up(cwd=elsewhere, PYTHONPATH=package_only(elsewhere),
                        WHATSAPP_GRAPH_URL=graph.url,
                        WHATSAPP_MEDIA_HOSTS="http://127.0.0.1") as up:
        yield up


@dataclass(frozen=True)
class Shop:
    """The demo organization with a Cloud API number and a customer who wrote to it."""

    url: str
    api: requests.Session
    conversation_id: int
    graph: FakeGraph

    def send(self, text: str) -> None:
        answer = self.api.post(f"{self.url}/api/whatsapp/send", timeout=10,
                               json={"conversation_id": self.conversation_id, "text": text})
        assert answer.status_code == 201, answer.text

    def delivered(self, text: str) -> bool:
        """Has the fake Graph API received the send of `text`?"""
        return any(send.get("text", {}).get("body") == text for send in self.graph.sends())


@pytest.fixture(scope="module")
def shop(stack, graph) -> Shop:
    result = stack.crm("seed-demo")
    assert result.returncode == 0, result.stderr[-3000:]
    api = requests.Session()
    login = api.post(f"{stack.url}/api/auth/login", timeout=10,
                     json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
    api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    created = api.post(f"{stack.url}/api/whatsapp/profiles", timeout=10, json={
        "provider": "cloud", "display_name": "Support", "phone_number_id": NUMBER_ID,
        "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET})
    assert created.status_code == 201, created.text
    body = payload("text", phone_number_id=NUMBER_ID)
    kept = requests.post(f"{stack.url}/webhooks/whatsapp/{created.json()['id']}", data=body,
                         timeout=10, headers={"Content-Type": "application/json",
                                              "X-Hub-Signature-256": signature(body, APP_SECRET)})
    assert kept.status_code == 200, kept.text

    def conversation() -> int | None:
        """The customer's conversation with the cloud number (the demo has sandbox ones)."""
        listed = api.get(f"{stack.url}/api/whatsapp/conversations", timeout=10).json()
        return next((item["id"] for item in listed["items"]
                     if item["profile_id"] == created.json()["id"]), None)

    return Shop(stack.url, api, wait_until(conversation, "the customer's message applied",
                                           RECOVERY), graph)


def kill(up: Up, *words: str) -> int:
    """SIGKILL the process of `crm up` whose command line has `words`; its id."""
    pid = up.child(*words)
    assert pid is not None, f"crm up runs no {words}:\n{up.log()[-3000:]}"
    os.kill(pid, signal.SIGKILL)
    return pid


def replaced(up: Up, pid: int, *words: str) -> int | None:
    """The id of the process that replaced `pid`, once there is one."""
    now = up.child(*words)
    return now if now not in (None, pid) else None


def test_crm_worker_runs_from_another_directory(stack):
    """`crm worker --burst`, run where the repository is not, works off the queues and ends."""
    result = stack.crm("worker", "--burst")

    assert result.returncode == 0, result.stderr[-3000:]


def test_a_killed_worker_is_restarted_and_a_send_after_the_kill_reaches_whatsapp(stack, shop):
    """SIGKILL of the worker that sends replies: the web keeps answering, the worker is started
    again (the log says so), and a message sent after the kill reaches the Graph API."""
    pid = kill(stack, *INTERACTIVE)

    assert serving(stack.url)
    shop.send("sent after the worker was killed")
    wait_until(lambda: shop.delivered("sent after the worker was killed"),
               "the send reaching the Graph API", RECOVERY)
    assert replaced(stack, pid, *INTERACTIVE)
    assert "worker (interactive) was killed by SIGKILL; restarting in 1s" in stack.log()
    assert stack.process.poll() is None


def test_a_killed_web_comes_back_and_answers(stack):
    """SIGKILL of the web process: it is started again on the same port and answers."""
    pid = kill(stack, "run-web")

    wait_until(lambda: serving(stack.url), "the web answering again", RECOVERY)
    assert replaced(stack, pid, "run-web")
    assert "web was killed by SIGKILL; restarting in 1s" in stack.log()


def test_a_killed_redis_is_started_again_with_its_data(stack, shop):
    """SIGKILL of the embedded Redis: it comes back on its port, with what it held, and
    replies are sent again."""
    port = int((stack.instance / "redis.port").read_text())
    Redis(port=port).set("wasl:fault-test", "kept")
    pid = kill(stack, "redis-server")

    wait_until(lambda: replaced(stack, pid, "redis-server"), "Redis started again", RECOVERY)
    # The new process exists a moment before it listens (crm/embedded.py start_redis).
    wait_until(lambda: _is_listening(port), "Redis listening on its port", RECOVERY)
    assert Redis(port=port).get("wasl:fault-test") == b"kept"
    shop.send("sent after Redis was killed")
    wait_until(lambda: shop.delivered("sent after Redis was killed"),
               "the send reaching the Graph API", RECOVERY)
    assert "redis was killed by SIGKILL; restarting in 1s" in stack.log()


def _import_state(up: Up, import_id: int) -> tuple[str, int, int]:
    """(status, processed rows, total rows) of an import, read as the database superuser."""
    port = int((up.instance / "postgres.port").read_text())
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/wasl") as conn:
        return conn.execute("SELECT status, processed_rows, total_rows FROM customer_imports "
                            "WHERE id = %s", (import_id,)).fetchone()


def _start_import(url: str, rows: int) -> int:
    """Upload a CSV of `rows` new customers and start its import, as the demo admin does."""
    http = log_in(url)
    new = http.get(f"{url}/customers/imports/new", timeout=10)
    lines = ["name,phone", *(f"Customer {n},+96650{n:07d}" for n in range(rows))]
    upload = http.post(f"{url}/customers/imports", timeout=60, allow_redirects=False,
                       data={"csrf_token": csrf_token(new.text)},
                       files={"file": ("customers.csv", "\n".join(lines).encode(), "text/csv")})
    assert upload.status_code == 303, upload.text[-2000:]
    page = http.get(f"{url}{upload.headers['Location']}", timeout=30).text
    start = http.post(f"{url}{upload.headers['Location']}", timeout=30, allow_redirects=False,
                      data={"csrf_token": csrf_token(page), "encoding": _hidden(page, "encoding"),
                            "delimiter": _hidden(page, "delimiter"), "column-0": "name",
                            "column-1": "phone", "on_duplicate": "skip"})
    assert start.status_code == 303, start.text[-2000:]
    return int(upload.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def _hidden(page: str, name: str) -> str:
    """The value of a hidden input of the mapping form, which the browser posts back."""
    return re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page).group(1)


def test_a_running_import_does_not_hold_a_send(stack, shop):
    """While a big import runs, a reply is sent at once: bulk jobs have a worker of their own."""
    import_id = _start_import(stack.url, 40_000)

    def under_way() -> bool:
        status, processed, _total = _import_state(stack, import_id)
        return status == "running" and processed > 0

    wait_until(under_way, "the import running", RECOVERY)

    shop.send("sent during the import")
    wait_until(lambda: shop.delivered("sent during the import"),
               "the send reaching the Graph API", RECOVERY)

    status, processed, total = _import_state(stack, import_id)
    assert status == "running", f"the send waited for the import ({processed} of {total})"


def test_a_process_that_keeps_dying_stops_crm_up_saying_why(stack, elsewhere):
    """A worker that dies five times in a row stops the whole `crm up` with the reason; the
    servers another `crm up` started (the module's) stay up."""
    port, log_file = free_port(), stack.instance / "second-up.log"
    second = Up(f"http://127.0.0.1:{port}", stack.instance, stack.environment,
                start_up(log_file, port, stack.environment, elsewhere), elsewhere, log_file)
    try:
        wait_until(lambda: second.process.poll() is not None or serving(second.url),
                   "a second crm up serving", RECOVERY)
        pid = None
        for _death in range(5):
            pid = wait_until(lambda pid=pid: (second.process.poll() is not None
                                              or replaced(second, pid, *INTERACTIVE)),
                             "the worker started", RECOVERY)
            assert second.process.poll() is None, second.log()[-3000:]
            os.kill(pid, signal.SIGKILL)
        second.process.wait(RECOVERY)
    finally:
        if second.process.poll() is None:
            stop(second.process)

    assert second.process.returncode == 1
    assert ("worker (interactive) died 5 times within 120s (the last time it was killed by "
            "SIGKILL); stopping everything") in second.log()
    assert serving(stack.url)
