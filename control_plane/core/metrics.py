"""In-process counters, read by tests, `/api/v1/engine` and Prometheus at `/metrics`.

A counter is named with dots (`lifecycle.loads`) and may carry Prometheus labels
in its name (`lifecycle.model_loads{model="x"}`). Counters are per process: with
several uvicorn workers, Prometheus sums the scrapes of each.
"""

from __future__ import annotations

import re
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


def labelled(name: str, **labels: str) -> str:
    """`name{key="value",...}`, with values escaped as Prometheus requires."""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"') for v in labels.values())
    pairs = ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True))
    return f"{name}{{{pairs}}}"


_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_text() -> str:
    """Every counter in Prometheus' text exposition format, as `conch_<name>_total`."""
    families: dict[str, list[str]] = {}
    for key, count in snapshot().items():
        name, brace, labels = key.partition("{")
        family = "conch_" + _INVALID.sub("_", name) + "_total"
        families.setdefault(family, []).append(f"{family}{brace}{labels} {count}")
    lines = []
    for family in sorted(families):  # a family's samples must stand together
        lines.append(f"# TYPE {family} counter")
        lines.extend(sorted(families[family]))
    return "\n".join(lines) + "\n"
