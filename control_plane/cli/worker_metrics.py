"""Where `conch serve --workers N` has its workers' Prometheus values summed.

prometheus_client's multiprocess mode: each worker writes its counters, gauges and
histograms to files in PROMETHEUS_MULTIPROC_DIR, and a scrape of any worker reads
and sums them all (`core/metrics.py`). The variable must be set before a worker
builds its first metric, so it is set here, in the parent, and the workers
inherit it. Files of an earlier run would be summed too: a directory the operator
named is emptied first; otherwise a fresh one is made and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def worker_metrics(workers: int) -> Iterator[str | None]:
    """The directory in force while serving (None: one worker, values in-process)."""
    named = os.environ.get(VARIABLE)
    if named:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield named
        return
    if workers <= 1:
        yield None
        return
    made = tempfile.mkdtemp(prefix="conch-metrics-")
    os.environ[VARIABLE] = made
    try:
        yield made
    finally:
        os.environ.pop(VARIABLE, None)
        shutil.rmtree(made, ignore_errors=True)
