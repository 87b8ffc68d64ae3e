"""The queues page: depth per priority and the workers, live or stopped, as Redis knows
them (the app's own workers, and a consumer no process reads for)."""

from __future__ import annotations

import os
import re
import socket

import httpx
from fastapi import FastAPI

from control_plane.jobs.queue import GROUP, LEVELS
from control_plane.jobs.service import queue_of
from tests.control_plane.conftest import make_key
from tests.control_plane.console.conftest import SignedIn
from tests.control_plane.waiting import until

ASYNC = "/api/inference/predict/async"

IDLE = "console-test-idle-consumer"


def _worker_state(page: str, name: str) -> str:
    found = re.search(rf"<code>{re.escape(name)}</code></th>\s*<td>.*?>(live|stopped)<", page)
    assert found, f"{name} is not on the page: {page[-3000:]}"
    return found.group(1)


async def _one_task_done(client: httpx.AsyncClient, key: str, model_id: int) -> None:
    """A task this app's worker takes: a worker that never took one is not yet a
    consumer on Redis before 7.0 (the embedded one)."""
    headers = {"X-API-Key": key}
    body = {"data": [[0]], "model_id": model_id}
    submitted = await client.post(ASYNC, json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    task = f"{ASYNC}/{submitted.json()['task_id']}"

    async def finished() -> bool:
        answer = await client.get(task, headers=headers)
        return answer.json()["status"] in ("completed", "failed")

    await until(finished, "the async task was not finished")


async def test_the_queues_page_shows_depth_per_priority_and_which_workers_are_live(
    app: FastAPI,
    client: httpx.AsyncClient,
    model_ids: dict[str, int],
    signed_in: SignedIn,
) -> None:
    await _one_task_done(client, await make_key(app, ["predict"]), model_ids["a"])
    queue = queue_of(app.state.components)
    # A consumer as a replica that stops leaves it: known to the group, reading nothing.
    stream = queue.keys.stream(LEVELS[-1])
    await queue.redis.xgroup_createconsumer(stream, GROUP, IDLE)
    try:
        async with signed_in(await make_key(app, ["read"])) as console:
            fresh = (await console.http.get("/console/queues")).text
    finally:
        await queue.redis.xgroup_delconsumer(stream, GROUP, IDLE)
    for level in LEVELS:
        assert f"<dt>Waiting, {level}</dt><dd>" in fresh
    assert _worker_state(fresh, IDLE) == "live"
    assert re.search(r"Workers: [1-9]\d* live of \d+ seen", fresh)
    # This app's own worker, reading every second.
    own = re.findall(rf"<code>({socket.gethostname()}-{os.getpid()}-[0-9a-f]{{6}})</code>", fresh)
    print(re.findall(r"<code>([^<]+)</code></th>", fresh), socket.gethostname(), os.getpid())
    assert "live" in {_worker_state(fresh, name) for name in own}
