"""The `crm` command on a bare machine: `crm up` runs everything on the embedded servers, and
other `crm` commands run beside it without taking it down.

Real processes on a fresh instance folder, as a newcomer runs them after `make run`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import requests

from crm.embedded import _is_listening
from crm.foundation.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.conftest import ROOT, free_port
from tests.live import wait_until

STARTUP = 240.0  # initdb, migrations and three processes, on a busy machine
# Settings `crm` would take from the environment instead of starting its own servers.
_CONFIGURED = ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL", "SECRET_KEY",
               "PUBLIC_URL", "PORT", "CRM_EMBEDDED_OWNER")


@dataclass(frozen=True)
class Up:
    url: str
    instance: Path
    environment: dict[str, str]

    def crm(self, *args: str) -> subprocess.CompletedProcess:
        """Run another `crm` command on the same instance folder, as a second terminal would."""
        return subprocess.run([sys.executable, "-m", "crm", *args], cwd=ROOT,
                              env=self.environment, capture_output=True, text=True,
                              timeout=180, check=False)


def _serving(url: str) -> bool:
    try:
        return requests.get(f"{url}/login", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        pytest.fail("crm up did not stop on SIGTERM")


@pytest.fixture
def crm_up() -> Iterator[Up]:
    """`crm up --port N` on an instance folder of its own, stopped (SIGTERM) afterwards."""
    instance = Path(tempfile.mkdtemp(prefix="wasl-up-"))
    environment = {key: value for key, value in os.environ.items() if key not in _CONFIGURED}
    environment |= {"CRM_INSTANCE_PATH": str(instance), "SMTP_HOST": ""}
    port = free_port()
    up = Up(f"http://127.0.0.1:{port}", instance, environment)
    with open(instance / "up.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "crm", "up", "--port", str(port)],
                                   cwd=ROOT, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: process.poll() is not None or _serving(up.url), "crm up serving",
                   STARTUP)
        assert process.poll() is None, (instance / "up.log").read_text()[-3000:]
        yield up
    finally:
        if process.poll() is None:
            _stop(process)
        postgres_port = int((instance / "postgres.port").read_text())
        shutil.rmtree(instance, ignore_errors=True)
    assert not _is_listening(postgres_port), "crm up left its embedded PostgreSQL running"


def _log_in(url: str) -> requests.Session:
    """Log in as the demo admin through the login page; the browser-like session."""
    http = requests.Session()
    page = http.get(f"{url}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = http.post(f"{url}/login", allow_redirects=False, timeout=10,
                       data={"email": DEMO_EMAIL, "password": DEMO_PASSWORD,
                             "csrf_token": token})
    assert answer.status_code == 303, answer.text
    assert http.get(f"{url}/", timeout=10).status_code == 200
    return http


def _emailed_link(instance: Path, address: str, path: str) -> str:
    """The link to `path` in the emails written for `address` under instance/mail/."""
    for file in (instance / "mail").glob("*.eml"):
        message = message_from_bytes(file.read_bytes(), policy=policy.default)
        if message["To"] == address:
            found = re.search(r"\S+" + re.escape(path) + r"\S+",
                              message.get_body(("plain",)).get_content())
            if found:
                return found.group(0)
    return ""


def test_crm_commands_beside_crm_up_leave_it_running(crm_up):
    """`crm seed-demo`, `crm db upgrade` and `crm worker --burst` beside a running `crm up`
    each stop only what they started: afterwards the app still serves and logs people in,
    and a reset link built by `crm up --port N` points at port N."""
    for command in (("seed-demo",), ("db", "upgrade")):
        result = crm_up.crm(*command)
        assert result.returncode == 0, result.stderr[-3000:]
    http = _log_in(crm_up.url)

    page = http.get(f"{crm_up.url}/forgot-password", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    http.post(f"{crm_up.url}/forgot-password", timeout=10,
              data={"email": DEMO_EMAIL, "csrf_token": token})
    result = crm_up.crm("worker", "--burst")
    assert result.returncode == 0, result.stderr[-3000:]
    link = wait_until(lambda: _emailed_link(crm_up.instance, DEMO_EMAIL, "/reset-password/"),
                      "the reset email being written")
    assert link.startswith(f"{crm_up.url}/reset-password/")
    _log_in(crm_up.url)
