"""The processes `crm up` runs, kept running: one that dies is started again, after a pause
that grows while it keeps dying; only one that cannot stay up stops them all.

Each death is logged with its cause and the pause before the restart: 1 s, doubling up to
30 s, and back to 1 s once the process has stayed up a minute. Five deaths of one process
within two minutes mean it cannot run (a setting it refuses, a port another program holds):
then everything stops and the reason is said, rather than `crm up` claiming to run while a
part of it does not.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("crm.up")

FIRST_PAUSE = 1.0  # seconds before the first restart; doubled at each death after it
LONGEST_PAUSE = 30.0
STEADY_AFTER = 60.0  # a process up this long has recovered: its next pause is FIRST_PAUSE
DEATHS_ALLOWED = 5  # within DEATH_WINDOW; at this many, everything stops
DEATH_WINDOW = 120.0
POLL_INTERVAL = 0.3
STOP_GRACE = 15.0  # for a process to finish what it is doing (a job, a request) after SIGTERM


class KeepsDyingError(Exception):
    """A process died DEATHS_ALLOWED times within DEATH_WINDOW."""


@dataclass
class Child:
    """One process kept running: how to start it, and how it has been dying."""

    name: str
    start: Callable[[], subprocess.Popen]
    process: subprocess.Popen | None = None  # None until started (or adopted, running)
    # A server is stopped by whoever started it (at exit), after the processes that use it.
    server: bool = False
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    pause: float = FIRST_PAUSE
    deaths: deque[float] = field(default_factory=deque)


def describe_exit(code: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    """Start the children, restart those that die, stop them all on SIGINT or SIGTERM."""

    def __init__(self, children: list[Child]):
        self.children = children
        self.stopping = False

    def run(self) -> None:
        """Run until SIGINT or SIGTERM, then stop the children; KeepsDyingError stops them too."""
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        try:
            for child in self.children:
                if child.process is None:
                    self._start(child, time.monotonic())
            while not self.stopping:
                self.check(time.monotonic())
                time.sleep(POLL_INTERVAL)
        finally:
            self.stop()

    def _request_stop(self, *_args: object) -> None:
        self.stopping = True

    def check(self, now: float) -> None:
        """Restart the children whose pause is over; notice those that died."""
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._start(child, now)
            elif child.process is not None and (code := child.process.poll()) is not None:
                self._died(child, describe_exit(code), now)

    def _start(self, child: Child, now: float) -> None:
        child.started_at, child.restart_at = now, None
        try:
            child.process = child.start()
        except (OSError, RuntimeError) as exc:  # no executable, no port: a death like any
            child.process = None
            self._died(child, f"could not start ({exc})", now)

    def _died(self, child: Child, cause: str, now: float) -> None:
        if self.stopping:  # Ctrl-C reaches the children too; that is no death
            return
        if now - child.started_at >= STEADY_AFTER:
            child.pause = FIRST_PAUSE
        child.deaths.append(now)
        while child.deaths[0] < now - DEATH_WINDOW:
            child.deaths.popleft()
        if len(child.deaths) >= DEATHS_ALLOWED:
            raise KeepsDyingError(f"{child.name} died {len(child.deaths)} times within "
                             f"{DEATH_WINDOW:.0f}s (the last time it {cause}); "
                             f"stopping everything")
        log.warning("%s %s; restarting in %.0fs", child.name, cause, child.pause)
        child.restart_at = now + child.pause
        child.pause = min(child.pause * 2, LONGEST_PAUSE)

    def stop(self) -> None:
        """SIGTERM every child but the servers, SIGKILL those still up after STOP_GRACE."""
        running = [child.process for child in self.children
                   if not child.server and child.process is not None
                   and child.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
