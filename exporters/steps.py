"""Named, timed steps and the record of how each went.

An export runs a fixed plan of steps (convert, any transforms, write, parity,
publish). `StepLog` runs them one at a time, tells a progress hook when each
starts and ends, and once one fails marks every later step skipped, so the
report always names the whole plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

# "running" is only ever seen by a progress hook; a finished report holds the other three.
StepStatus = Literal["running", "ok", "failed", "skipped"]


@dataclass
class StepRecord:
    name: str
    status: StepStatus = "running"
    seconds: float = 0.0
    detail: str = ""  # why it failed or was skipped


# Called when a step starts (status "running") and again when it ends.
ProgressHook = Callable[[StepRecord], None]


def no_progress(step: StepRecord) -> None:
    """The default hook: library callers need no display."""


class StepLog:
    """Runs the planned steps in order and records each one's status and duration."""

    def __init__(self, plan: Sequence[str], progress: ProgressHook = no_progress) -> None:
        self._pending = list(plan)
        self._progress = progress
        self.steps: list[StepRecord] = []

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """Run the body as the next planned step; a failure skips the rest of the plan."""
        self._take(name)
        record = StepRecord(name)
        self.steps.append(record)
        self._progress(record)
        started = time.perf_counter()
        try:
            yield record
        except BaseException as exc:
            self._finish(record, "failed", started, str(exc))
            self.skip_rest(f"after {name} failed")
            raise
        # The body may find there was nothing to do and say so by marking itself skipped.
        self._finish(
            record, "skipped" if record.status == "skipped" else "ok", started, record.detail
        )

    def skip_rest(self, reason: str) -> None:
        for name in list(self._pending):
            self._take(name)
            record = StepRecord(name, "skipped", detail=reason)
            self.steps.append(record)
            self._progress(record)

    def _take(self, name: str) -> None:
        if not self._pending or self._pending[0] != name:
            raise RuntimeError(f"step {name!r} is not next in the plan {self._pending}")
        self._pending.pop(0)

    def _finish(self, record: StepRecord, status: StepStatus, started: float, detail: str) -> None:
        record.status = status
        record.seconds = time.perf_counter() - started
        record.detail = detail
        self._progress(record)
