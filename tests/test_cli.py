"""The `crm` command on a bare machine: `crm up` runs everything on the embedded servers, and
other `crm` commands run beside it without taking it down.

Real processes on a fresh instance folder, as a newcomer runs them after `make run`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from crm.foundation.demo import DEMO_EMAIL
from tests.crm_up import Up, log_in, running_crm_up
from tests.live import csrf_token, wait_until


@pytest.fixture
def crm_up() -> Iterator[Up]:
    """`crm up --port N` on an instance folder of its own, stopped (SIGTERM) afterwards."""
    with running_crm_up() as up:
        yield up


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
    http = log_in(crm_up.url)

    page = http.get(f"{crm_up.url}/forgot-password", timeout=10)
    http.post(f"{crm_up.url}/forgot-password", timeout=10,
              data={"email": DEMO_EMAIL, "csrf_token": csrf_token(page.text)})
    result = crm_up.crm("worker", "--burst")
    assert result.returncode == 0, result.stderr[-3000:]
    link = wait_until(lambda: _emailed_link(crm_up.instance, DEMO_EMAIL, "/reset-password/"),
                      "the reset email being written")
    assert link.startswith(f"{crm_up.url}/reset-password/")
    log_in(crm_up.url)
