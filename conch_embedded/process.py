"""Child processes Conch starts itself (tritonserver, redis-server).

Each child runs in its own process group, so one signal reaches it and every
process it forked (Triton's Python backend stubs), and it asks the kernel to
send it SIGTERM if Conch dies first, so a crashed test or a killed `conch serve`
leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


class ProcessStartError(RuntimeError):
    """A child could not be started; the message is one line a user can act on."""


class ProcessExited(Exception):
    """The child exited while its caller waited for it to become ready."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exited with code {code}")
        self.code = code


class Service:
    """Something with start() and stop(), usable as `with Service(...) as running:`."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ProcessService(Service):
    """A Service that is one managed child process (what the supervisor watches)."""

    _process: ManagedProcess | None

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.exit_code()

    def interrupt(self) -> None:
        """From another thread: a start under way fails at once, stop() cleans up."""
        process = self._process
        if process is not None:
            process.interrupt()


# Children must die with Conch, even when it is SIGKILLed: PR_SET_PDEATHSIG. It is
# set by a tiny Python launcher that then execs the real command, not by a
# `preexec_fn`: Python code between fork and exec in a process with gRPC's threads
# running can crash the child (seen as redis-server "exiting" with SIGSEGV).
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before the signal was armed
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _dying_with_parent(argv: Sequence[str]) -> list[str]:
    # -I -S: no site-packages, no environment: a fast start that nothing can alter.
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so a port held only by TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port() -> int:
    """A port the kernel says is free right now (racy by nature; callers retry)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: held open together while chosen, so two calls in a
    row can never answer the same port (Triton refuses gRPC and metrics on one port)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http_ok(url: str) -> bool:
    """A readiness probe: does `url` answer 200 right now?"""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A child process with its own process group and log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                _dying_with_parent(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        """None while running (or never started); negative: killed by that signal.

        Looks without reaping: an exited leader stays a zombie until stop(), so its
        pid, which is also its group's id, cannot be taken by an unrelated process
        before stop() has killed what is left of the group (Triton's backend stubs)."""
        popen = self._popen
        if popen is None:
            return None
        if popen.returncode is not None:
            return popen.returncode
        try:
            info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already (Popen's own bookkeeping)
            return popen.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def running(self) -> bool:
        return self._popen is not None and self.exit_code() is None

    def group_members(self) -> list[int]:
        """Pids still in this child's process group (the leader included while it lives)."""
        return [] if self._popen is None else processes_in_group(self._popen.pid)

    def interrupt(self) -> None:
        """SIGTERM the group without waiting: safe from any thread (stop() cleans up)."""
        popen = self._popen
        if popen is not None and popen.returncode is None:
            self._signal_group(popen.pid, signal.SIGTERM)

    def wait_ready(
        self, probe: Callable[[], bool], timeout_s: float, interval_s: float = 0.1
    ) -> None:
        """Poll `probe` until it answers True. Raises ProcessExited if the child dies
        first and TimeoutError at the deadline; callers word the one-line error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise ProcessExited(code)
            if probe():
                return
            time.sleep(interval_s)
        raise TimeoutError

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after the timeout.

        A leader that died already leaves nobody to shut the rest down in order:
        its orphans (backend stubs) are SIGKILLed at once, then the leader is reaped."""
        if self._popen is None:
            return
        pgid = self._popen.pid
        leader_dead = self.exit_code() is not None
        self._signal_group(pgid, signal.SIGKILL if leader_dead else signal.SIGTERM)
        try:
            self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(pgid, signal.SIGKILL)
            self._popen.wait(timeout=5)
        # Grandchildren (backend stubs) may outlive the leader by a moment.
        deadline = time.monotonic() + timeout_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pgid):
            self._signal_group(pgid, signal.SIGKILL)
        self._popen = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def processes_in_group(pgid: int) -> list[int]:
    """Every live (not zombie) process whose process group is `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the ")" closing the command name: state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
