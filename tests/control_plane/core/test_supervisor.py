"""The supervisor restarts a dead child on its port, backing off while starts fail.

Real redis-servers throughout: killed with SIGKILL, and kept from restarting by a
socket holding their port (a failure a real peer produces on demand).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from control_plane.core.redis_embedded import EmbeddedRedis, answers_ping
from control_plane.core.supervisor import BackoffPolicy, Supervisor

# Fast, so that several restarts fit in a test, yet the first restart waits long
# enough for a test to take the dead server's port before it does.
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


@contextmanager
def _port_taken_once_free(port: int) -> Iterator[None]:
    """Hold `port` as soon as the killed server has released it: restarts then fail."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _await(lambda: _bound(holder, port), f"port {port} was released")
        holder.listen()
        yield


def _bound(holder: socket.socket, port: int) -> bool:
    try:
        holder.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


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
    caplog.set_level(logging.WARNING, logger="control_plane.core.supervisor")
    with _supervised(FAST) as (server, supervisor):
        assert server.port is not None
        os.kill(_pid(server), signal.SIGKILL)
        with _port_taken_once_free(server.port):  # every restart now fails: port in use
            assert supervisor.restarts(server) == 0
            _await(lambda: len(_delays(caplog)) >= 5, "five restarts were attempted")
        _await(lambda: supervisor.restarts(server) == 1, "the port was free again")
        assert answers_ping("127.0.0.1", server.port, 2)
    delays = _delays(caplog)
    assert delays[:5] == [0.2, 0.4, 0.8, 0.8, 0.8]  # doubled, bounded by max_s
    assert any("could not be restarted" in r.getMessage() for r in caplog.records)


def test_backoff_starts_over_after_a_healthy_period(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="control_plane.core.supervisor")
    policy = BackoffPolicy(first_s=0.2, max_s=0.8, healthy_after_s=0.5)
    with _supervised(policy) as (server, supervisor):
        assert server.port is not None
        os.kill(_pid(server), signal.SIGKILL)
        with _port_taken_once_free(server.port):
            assert supervisor.restarts(server) == 0
            _await(lambda: len(_delays(caplog)) >= 3, "three restarts were attempted")
        _await(lambda: supervisor.restarts(server) == 1, "the port was free again")
        assert _delays(caplog)[:3] == [0.2, 0.4, 0.8]
        restarted_at = time.monotonic()
        _await(lambda: time.monotonic() - restarted_at > 2 * policy.healthy_after_s, "healthy")
        attempts = len(_delays(caplog))
        os.kill(_pid(server), signal.SIGKILL)
        _await(lambda: supervisor.restarts(server) == 2, "restarted after the healthy run")
    assert _delays(caplog)[attempts] == policy.first_s
