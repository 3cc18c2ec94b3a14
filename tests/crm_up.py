"""`crm up` run for real on an instance folder of its own, as a newcomer runs it after `make run`;
the processes it runs, found by their command lines, for tests that kill them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from crm.embedded import _is_listening
from crm.foundation.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.conftest import ROOT, free_port
from tests.live import csrf_token, wait_until

STARTUP = 240.0  # initdb, migrations and the processes, on a busy machine
# Settings `crm` would take from the environment instead of starting its own servers.
_CONFIGURED = ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL", "SECRET_KEY",
               "PUBLIC_URL", "PORT", "CRM_EMBEDDED_OWNER")


@dataclass(frozen=True)
class Up:
    url: str
    instance: Path
    environment: dict[str, str]
    process: subprocess.Popen
    cwd: Path = ROOT
    log_file: Path | None = None  # where it writes (instance/up.log unless said)

    def crm(self, *args: str) -> subprocess.CompletedProcess:
        """Run another `crm` command on the same instance folder, as a second terminal would."""
        return subprocess.run([sys.executable, "-m", "crm", *args], cwd=self.cwd,
                              env=self.environment, capture_output=True, text=True,
                              timeout=180, check=False)

    def log(self) -> str:
        """What `crm up` and its processes wrote so far."""
        return (self.log_file or self.instance / "up.log").read_text()

    def child(self, *words: str) -> int | None:
        """The id of the process `crm up` runs whose command line has all of `words`."""
        found = [pid for pid, args in children(self.process.pid) if all(w in args for w in words)]
        assert len(found) <= 1, f"several processes match {words}"
        return found[0] if found else None


def children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is `pid`, with their command lines."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and _parent(entry) == pid:
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(entry.name), args))
        except OSError:  # the process ended meanwhile
            continue
    return found


def _parent(entry: Path) -> int:
    stat = (entry / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (name) state"


def serving(url: str) -> bool:
    try:
        return requests.get(f"{url}/login", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        pytest.fail("crm up did not stop on SIGTERM")


def bare_environment(instance: Path, **extra: str) -> dict[str, str]:
    """This process's environment without the settings that name servers, on `instance`."""
    environment = {key: value for key, value in os.environ.items() if key not in _CONFIGURED}
    return environment | {"CRM_INSTANCE_PATH": str(instance), "SMTP_HOST": ""} | extra


@contextmanager
def running_crm_up(cwd: Path = ROOT, **extra: str) -> Iterator[Up]:
    """`crm up --port N` started in `cwd` on a fresh instance folder, with `extra` settings;
    stopped (SIGTERM) afterwards, when it must stop the servers it started."""
    instance = Path(tempfile.mkdtemp(prefix="wasl-up-"))
    port = free_port()
    process = start_up(instance / "up.log", port, bare_environment(instance, **extra), cwd)
    up = Up(f"http://127.0.0.1:{port}", instance, bare_environment(instance, **extra), process,
            cwd)
    try:
        wait_until(lambda: process.poll() is not None or serving(up.url), "crm up serving",
                   STARTUP)
        assert process.poll() is None, up.log()[-3000:]
        yield up
    finally:
        if process.poll() is None:
            stop(process)
        postgres_port = int((instance / "postgres.port").read_text())
        redis_port = int((instance / "redis.port").read_text())
        shutil.rmtree(instance, ignore_errors=True)
    assert not _is_listening(postgres_port), "crm up left its embedded PostgreSQL running"
    assert not _is_listening(redis_port), "crm up left its embedded Redis running"


def start_up(log_file: Path, port: int, environment: dict[str, str], cwd: Path
             ) -> subprocess.Popen:
    """Start `crm up --port N`, writing what it says to `log_file`."""
    with open(log_file, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "crm", "up", "--port", str(port)],
                                cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def log_in(url: str) -> requests.Session:
    """Log in as the demo admin through the login page; the browser-like session."""
    http = requests.Session()
    page = http.get(f"{url}/login", timeout=10)
    answer = http.post(f"{url}/login", allow_redirects=False, timeout=10,
                       data={"email": DEMO_EMAIL, "password": DEMO_PASSWORD,
                             "csrf_token": csrf_token(page.text)})
    assert answer.status_code == 303, answer.text
    assert http.get(f"{url}/", timeout=10).status_code == 200
    return http
