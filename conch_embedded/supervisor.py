"""Keep the embedded Triton and Redis running: restart a child that dies.

`conch serve` starts them once; a crash (OOM killer, a segfault in a backend, an
operator's `kill`) would otherwise leave the control plane serving 503s until a
human noticed. A supervisor thread polls each child, and when one has exited it
cleans up after it (its process group, so Triton's backend stubs go too; its
scratch directory) and starts it again on the same ports, after an exponential
backoff that is reset once the child has stayed up for a healthy period.

The control plane notices the new Triton by itself: the reconciler watches
Triton's liveness and converges the restarted, empty server on SQL at once.

Restarted children are spawned by the supervisor thread, and PR_SET_PDEATHSIG fires
when the spawning *thread* ends: the thread therefore never dies of an error, and
it stops its children itself on the way out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from conch_embedded.process import ProcessStartError

logger = logging.getLogger(__name__)


class Supervised(Protocol):
    """What EmbeddedTriton and EmbeddedRedis offer: start() blocks until ready."""

    @property
    def name(self) -> str: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def running(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def interrupt(self) -> None: ...


@dataclass(frozen=True)
class BackoffPolicy:
    """Delays between restarts: first_s, doubled up to max_s; a child that ran for
    healthy_after_s before it died starts over from first_s."""

    first_s: float = 0.5
    max_s: float = 30.0
    healthy_after_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """The wait before restart number `attempt` (0: the first since healthy)."""
        return float(min(self.max_s, self.first_s * 2 ** min(attempt, 32)))


@dataclass
class _Child:
    service: Supervised
    started_at: float = field(default_factory=time.monotonic)
    attempt: int = 0  # restarts since the child was last healthy
    restarts: int = 0


class Supervisor:
    def __init__(
        self,
        services: Sequence[Supervised],
        policy: BackoffPolicy | None = None,
        poll_interval_s: float = 0.2,
    ) -> None:
        """`services` are running already, in start order (they stop in reverse)."""
        self.policy = policy or BackoffPolicy()
        self.poll_interval_s = poll_interval_s
        self._children = [_Child(service) for service in services]
        self._stopping = threading.Event()
        self._restarting: Supervised | None = None
        self._thread: threading.Thread | None = None

    def restarts(self, service: Supervised) -> int:
        """How often `service` was started again (successful starts only)."""
        return next(c.restarts for c in self._children if c.service is service)

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="conch-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 90.0) -> None:
        """No more restarts; the thread stops every child (in reverse order) and ends."""
        self._stopping.set()
        restarting = self._restarting
        if restarting is not None:
            restarting.interrupt()  # a start under way fails now instead of finishing
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.poll_interval_s):
                for child in self._children:
                    if self._stopping.is_set():
                        break
                    try:
                        self._check(child)
                    except Exception:  # this thread must outlive any one failure
                        logger.exception("supervising %s failed", child.service.name)
        finally:
            for child in reversed(self._children):
                try:
                    child.service.stop()
                except Exception:
                    logger.exception("stopping %s failed", child.service.name)

    def _check(self, child: _Child) -> None:
        service = child.service
        if service.running():
            return
        code = service.exit_code()
        service.stop()  # reap it, kill what is left of its group, free its directory
        if time.monotonic() - child.started_at >= self.policy.healthy_after_s:
            child.attempt = 0
        delay = self.policy.delay(child.attempt)
        child.attempt += 1
        cause = "failed to start" if code is None else f"exited with code {code}"
        logger.warning("%s %s; restarting in %.1fs", service.name, cause, delay)
        if self._stopping.wait(delay):
            return
        child.started_at = time.monotonic()
        self._restarting = service
        try:
            service.start()
        except ProcessStartError as exc:
            logger.warning("%s could not be restarted: %s", service.name, exc)
            return
        finally:
            self._restarting = None
        child.restarts += 1
        logger.warning("%s restarted (restart %d)", service.name, child.restarts)
