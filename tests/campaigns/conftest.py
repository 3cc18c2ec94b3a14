"""Fixtures of the campaigns' tests: the fake Graph API, and a fake clock for the pace."""

from __future__ import annotations

import time

import pytest

from crm.campaigns import pacing
from tests.whatsapp.conftest import graph  # noqa: F401 - the fake Graph API, as a fixture


class FakeClock:
    """Time that moves only when slept through or advanced: pacing waits cost nothing."""

    def __init__(self, start: float) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds

    def advance(self, seconds: float) -> None:
        self.time += seconds

    def advance_to(self, moment: float) -> None:
        self.time = max(self.time, moment)


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> FakeClock:
    """The pace's clock, faked for every test here (live tests' processes keep real time)."""
    fake = FakeClock(time.time())
    monkeypatch.setattr(pacing, "clock", fake)
    return fake
