"""A deployment of the fault tests' own, and replicas of it started and killed at will.

Its database is a fresh SQLite file, so its task queue has a namespace of its own
(`Settings.deployment_id`): no other test's worker, the session app's included, can
take its tasks. Triton and Redis are the session's. Its model is the Python
regressor that sleeps as many seconds as a row's first feature asks
(`triton/slow_model.py`), so a task lasts exactly as long as a test needs.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from conch_embedded.process import ManagedProcess, free_port, tail
from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.locations import PROJECT_ROOT
from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.jobs.queue import TaskKeys
from tests.control_plane.conftest import stack_settings
from tests.control_plane.replicas import replica_env
from tests.control_plane.waiting import until

ASYNC = "/api/inference/predict/async"
FINISHED = frozenset({"completed", "failed", "cancelled"})
# Takeover after 1 s of silence; each replica renews every third of it.
CLAIM_AFTER_S = 1.0
MAX_PER_KEY = 20


def deployment_settings(
    root: Path, redis_url: str, triton: EmbeddedTriton, model_repository: Path
) -> Settings:
    """A migrated database under `root`, its own event channel, no task workers."""
    settings = stack_settings(f"sqlite:///{root / 'conch.db'}", redis_url, triton, model_repository)
    return settings.model_copy(
        update={
            "model_events_channel": f"conch:faults:{uuid.uuid4().hex}",
            "task_workers": 0,
            "task_claim_after_s": CLAIM_AFTER_S,
            "task_max_per_key": MAX_PER_KEY,
        }
    )


@dataclass
class InProcess:
    app: FastAPI
    client: httpx.AsyncClient


@asynccontextmanager
async def replica(settings: Settings, **changes: Any) -> AsyncIterator[InProcess]:
    """A replica in this process (its lifespan run), with `changes` to its settings."""
    app = create_app(settings.model_copy(update=changes), migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            yield InProcess(app, client)


@dataclass
class ProcessReplica:
    url: str
    process: ManagedProcess
    pid: int

    async def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, no last renewal, nothing acknowledged."""
        os.kill(self.pid, signal.SIGKILL)

        async def dead() -> bool:
            return self.process.exit_code() is not None

        await until(dead, f"replica {self.pid} outlived SIGKILL")
        assert self.process.exit_code() == -signal.SIGKILL


def _environment(settings: Settings) -> dict[str, str]:
    return {
        **replica_env(settings),
        "CONCH_MODEL_EVENTS_CHANNEL": settings.model_events_channel,
        "CONCH_CALLBACK_ALLOWED_HOSTS": settings.callback_allowed_hosts,
        "CONCH_TASK_WORKERS": str(settings.task_workers),
        "CONCH_TASK_CLAIM_AFTER_S": str(settings.task_claim_after_s),
        "CONCH_TASK_MAX_PER_KEY": str(settings.task_max_per_key),
    }


@asynccontextmanager
async def process_replica(
    settings: Settings, log_dir: Path, **changes: Any
) -> AsyncIterator[ProcessReplica]:
    """A replica as its own uvicorn process, answering once this yields."""
    port = free_port()
    process = ManagedProcess(
        f"conch-{port}",
        [
            sys.executable, "-m", "uvicorn", "control_plane.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ],
        log_path=log_dir / f"replica-{port}.log",
        env=_environment(settings.model_copy(update=changes)),
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    process.spawn()
    assert process.pid is not None
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as probe:

            async def up() -> bool:
                assert process.exit_code() is None, f"replica exited: {tail(process.log_path)}"
                try:
                    return (await probe.get("/inference/models")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(up, f"replica on port {port} did not start")
        yield ProcessReplica(url, process, process.pid)
    finally:
        process.stop(timeout_s=10)


async def task_of(client: httpx.AsyncClient, task_id: str, key: str) -> dict[str, Any]:
    response = await client.get(f"{ASYNC}/{task_id}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def until_status(
    client: httpx.AsyncClient, task_id: str, key: str, statuses: Collection[str]
) -> dict[str, Any]:
    """The task as soon as its status is one of `statuses`."""
    task: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal task
        task = await task_of(client, task_id, key)
        return task["status"] in statuses

    await until(reached, f"task {task_id} never reached {sorted(statuses)}")
    return task


async def until_called_back(client: httpx.AsyncClient, task_id: str, key: str) -> dict[str, Any]:
    """The task as soon as its callback's delivery is final (delivered or failed)."""
    task: dict[str, Any] = {}

    async def settled() -> bool:
        nonlocal task
        task = await task_of(client, task_id, key)
        return task["callback"]["status"] in ("delivered", "failed")

    await until(settled, f"the callback of task {task_id} never settled")
    return task


async def completions(redis: Redis, namespace: str) -> int:
    """Tasks recorded finished in this namespace (the queue's per-second counters):
    one per task, however many replicas ran it."""
    pattern = f"{TaskKeys(namespace).prefix}done:*"
    counts = [await redis.get(name) async for name in redis.scan_iter(match=pattern)]
    return sum(int(count) for count in counts if count is not None)
