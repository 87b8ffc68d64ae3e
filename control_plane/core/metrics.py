"""In-process counters (no metrics library is a dependency yet); read by tests and /metrics."""

from __future__ import annotations

from collections import Counter
from threading import Lock

_counters: Counter[str] = Counter()
_lock = Lock()


def increment(name: str, amount: int = 1) -> None:
    with _lock:
        _counters[name] += amount


def value(name: str) -> int:
    with _lock:
        return _counters[name]


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counters)
