"""A logging handler whose records are formatted and written by one thread, in batches.

Measured under load (docs/OBSERVABILITY.md), a queue and a listener thread
(`logging.handlers.QueueListener`) woke that thread for every record: a context
switch per request cost the control plane more CPU than formatting and writing
the line did. Here the emitting thread (the event loop) only appends the record
to a deque; the writer wakes every `interval_s` (at once for a WARNING or
worse), formats what accumulated and writes it in one call. A stalled stderr
never stalls a request; past `max_pending` records waiting, new ones are dropped
and the drop is written once the stream takes lines again. Without a `stream`,
lines go to `sys.stderr` as it is when they are written (a test harness that
captures stderr captures them).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from typing import TextIO


class BatchWriter(logging.Handler):
    def __init__(
        self,
        stream: TextIO | None,
        formatter: logging.Formatter,
        *,
        interval_s: float = 0.05,
        max_pending: int = 100_000,
    ) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._stream = stream
        self._interval_s = interval_s
        self._max_pending = max_pending
        # Records, and lines their caller formatted already (`write_line`).
        self._pending: deque[logging.LogRecord | str] = deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="conch-log-writer", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # No handler lock: appending to a deque is atomic.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(record)
        if record.levelno >= logging.WARNING:
            self._wake.set()

    def write_line(self, line: str) -> None:
        """A line formatted by its caller, written in order with the records: no
        record object kept until the writer wakes (the access line, per request)."""
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(line)

    def close(self) -> None:
        """Writes what is pending, then ends the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        super().close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            self._write()
        self._write()

    def _write(self) -> None:
        lines = []
        last = None
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, str):
                lines.append(item)
                continue
            last = item
            try:
                lines.append(self.format(item))
            except Exception:
                self.handleError(item)
        if self.dropped:
            lines.append(f"{self.dropped} log records dropped: the log stream did not keep up")
            self.dropped = 0
        if not lines:
            return
        stream = self._stream or sys.stderr
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except Exception:
            if last is not None:
                self.handleError(last)
