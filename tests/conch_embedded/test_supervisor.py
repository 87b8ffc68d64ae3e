"""The supervisor restarts a dead child on its port, backing off while starts fail.

A real redis-server, killed with SIGKILL, for the restart itself; for the backoff
sequence a fake child whose starts fail a set number of times (a real one would
need a race for its port).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from conch_embedded.process import ProcessStartError
from conch_embedded.redis_server import EmbeddedRedis, answers_ping
from conch_embedded.supervisor import BackoffPolicy, Supervisor

# Fast, so that several restarts fit in a test.
FAST = BackoffPolicy(first_s=0.2, max_s=0.8, healthy_after_s=3600.0)
DEADLINE_S = 30.0  # a failure guard only: every wait below is for a condition


def _await(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def _pid(server: EmbeddedRedis) -> int:
    assert server._process is not None and server._process.pid is not None
    return server._process.pid


def _delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    pattern = re.compile(r"restarting in ([\d.]+)s")
    return [float(m[1]) for r in caplog.records if (m := pattern.search(r.getMessage()))]


@contextmanager
def _supervised(policy: BackoffPolicy) -> Iterator[tuple[EmbeddedRedis, Supervisor]]:
    server = EmbeddedRedis().start()
    supervisor = Supervisor([server], policy, poll_interval_s=0.02).start()
    try:
        yield server, supervisor
    finally:
        supervisor.stop()
        server.stop()


class _Flaky:
    """A child that dies on demand and then fails its next `failing` starts: the backoff
    tests need exact failures, not a race for a port."""

    name = "flaky"

    def __init__(self) -> None:
        self.alive = True
        self.failing = 0

    def die(self, failing_starts: int) -> None:
        self.failing = failing_starts
        self.alive = False

    def start(self) -> _Flaky:
        if self.failing:
            self.failing -= 1
            raise ProcessStartError("port in use")
        self.alive = True
        return self

    def stop(self) -> None:
        self.alive = False

    def running(self) -> bool:
        return self.alive

    def exit_code(self) -> int | None:
        return None if self.alive else -9

    def interrupt(self) -> None:
        pass


@contextmanager
def _flaky(policy: BackoffPolicy) -> Iterator[tuple[_Flaky, Supervisor]]:
    child = _Flaky()
    supervisor = Supervisor([child], policy, poll_interval_s=0.02).start()
    try:
        yield child, supervisor
    finally:
        supervisor.stop()


def test_backoff_doubles_up_to_its_bound() -> None:
    policy = BackoffPolicy(first_s=0.5, max_s=30.0)
    assert [policy.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000) == 30.0  # no overflow after days of crashing


def test_killed_redis_is_restarted_on_its_port() -> None:
    with _supervised(FAST) as (server, supervisor):
        port, first = server.port, _pid(server)
        assert port is not None
        os.kill(first, signal.SIGKILL)
        _await(lambda: supervisor.restarts(server) == 1, "redis-server was restarted")
        assert server.port == port
        assert _pid(server) != first
        assert answers_ping("127.0.0.1", port, 2)
        workdir = server._workdir
    assert workdir is not None and not workdir.exists()  # stopped with the supervisor
    assert not answers_ping("127.0.0.1", port, 2)


def test_failing_restarts_back_off_then_succeed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="conch_embedded.supervisor")
    with _flaky(FAST) as (child, supervisor):
        child.die(failing_starts=5)
        _await(lambda: supervisor.restarts(child) == 1, "the sixth start succeeded")
        assert child.running()
    assert _delays(caplog)[:6] == [0.2, 0.4, 0.8, 0.8, 0.8, 0.8]  # doubled, bounded by max_s
    assert sum("could not be restarted" in r.getMessage() for r in caplog.records) == 5


def test_backoff_starts_over_after_a_healthy_period(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="conch_embedded.supervisor")
    policy = BackoffPolicy(first_s=0.2, max_s=0.8, healthy_after_s=0.5)
    with _flaky(policy) as (child, supervisor):
        child.die(failing_starts=2)
        _await(lambda: supervisor.restarts(child) == 1, "the third start succeeded")
        assert _delays(caplog)[:3] == [0.2, 0.4, 0.8]
        restarted_at = time.monotonic()
        _await(lambda: time.monotonic() - restarted_at > 2 * policy.healthy_after_s, "healthy")
        attempts = len(_delays(caplog))
        child.die(failing_starts=0)
        _await(lambda: supervisor.restarts(child) == 2, "restarted after the healthy run")
    assert _delays(caplog)[attempts] == policy.first_s
