"""The async tasks' figures on `/metrics`, counted where they happen.

The families are `core.metrics`'s (summed over workers like the others): tasks
finished by status (counted by the replica that recorded the outcome, so once per
task), tasks this replica took over from one that stopped, callbacks by outcome
and their failed attempts, and the latency, queued -> completed, as a histogram.
The queue depth per priority is read from Redis when scraped, and left out when
Redis does not answer at once: a scrape must not hang on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from redis.exceptions import RedisError

from control_plane.core import metrics
from control_plane.jobs.callbacks import Delivery
from control_plane.jobs.queue import TaskQueue

logger = logging.getLogger(__name__)

DEPTH_READ_TIMEOUT_S = 1.0

_DEPTH = "conch_task_queue_depth"


def task_finished(task: Mapping[str, str], status: str) -> None:
    """A task whose outcome this replica recorded."""
    metrics.TASKS_FINISHED.labels(status).inc()
    if status != "completed":
        return
    try:
        created = datetime.fromisoformat(task.get("created_at", ""))
    except ValueError:  # not stamped by `submit`: no latency to tell
        return
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    # Another replica's clock stamped it: never below zero.
    metrics.TASK_LATENCY_SECONDS.observe(max(0.0, (datetime.now(UTC) - created).total_seconds()))


class CallbackCounter:
    """One delivery's failed attempts, counted as they happen; its outcome, once."""

    def __init__(self) -> None:
        self._failed = 0

    def saw(self, delivery: Delivery) -> None:
        # Every attempt failed but a delivered delivery's last one.
        failed = len(delivery.attempts) - (delivery.status == "delivered")
        if failed > self._failed:
            metrics.CALLBACK_ATTEMPTS_FAILED.inc(failed - self._failed)
            self._failed = failed
        if delivery.status != "retrying":
            metrics.CALLBACK_DELIVERIES.labels(delivery.status).inc()


async def prometheus_text(queue: TaskQueue | None) -> str:
    """The queue depth gauge, when Redis answers (else nothing)."""
    lines = []
    if queue is not None:
        try:
            async with asyncio.timeout(DEPTH_READ_TIMEOUT_S):
                depths = await queue.depths()
        except (RedisError, TimeoutError) as exc:  # Redis away or slow: scrape without it
            logger.warning("queue depth left out of /metrics: %s", exc or type(exc).__name__)
        else:
            lines.append(f"# TYPE {_DEPTH} gauge")
            lines += [
                f"{metrics.labelled(_DEPTH, priority=level)} {depth}"
                for level, depth in depths.items()
            ]
    return "".join(line + "\n" for line in lines)
