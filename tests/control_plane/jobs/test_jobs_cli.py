"""`conch jobs` against in-process apps served by uvicorn: list, show, cancel, watch.

Queued tasks come from a replica whose queue no worker serves (they stay queued
for as long as the test looks); completed ones from the session's app. The
command line runs in a thread (its client is synchronous) while this loop serves.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import Result
from fastapi import FastAPI
from typer.testing import CliRunner

from conch.client import AsyncClient
from conch_manifest.locations import PROJECT_ROOT
from control_plane.cli import with_commands
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key
from tests.control_plane.jobs.queue_helpers import Recorder, worker_on
from tests.control_plane.jobs.replica_helpers import queue_of, replica_without_workers
from tests.control_plane.served import served
from tests.control_plane.waiting import until

cli = with_commands()
NO_SUCH_TASK = "task_" + "0" * 24


@pytest.fixture(scope="module")
async def idle(settings: Settings) -> AsyncIterator[FastAPI]:
    async with replica_without_workers(settings) as replica:
        yield replica


@pytest.fixture(scope="module")
async def idle_url(idle: FastAPI) -> AsyncIterator[str]:
    async with served(idle) as url:
        yield url


@pytest.fixture(scope="module")
async def app_url(app: FastAPI) -> AsyncIterator[str]:
    async with served(app) as url:
        yield url


async def _jobs(url: str, key: str, *args: str) -> Result:
    env = {"CONCH_URL": url, "CONCH_API_KEY": key, "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, cli, ["jobs", *args], env=env)


async def _ok(url: str, key: str, *args: str) -> str:
    result = await _jobs(url, key, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


async def _submit(app: FastAPI, key: str, model_id: int, priority: str = "normal") -> str:
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://conch", key, transport=transport) as conch:
        answer: dict[str, Any] = await conch.submit_async([[1.0]], model_id, priority=priority)
    return str(answer["task_id"])


def _row(output: str, task_id: str) -> str:
    [line] = [line for line in output.splitlines() if task_id in line]
    return line


async def test_list_show_and_cancel_a_queued_task(
    app: FastAPI, idle: FastAPI, idle_url: str, model_ids: dict[str, int]
) -> None:
    key = await make_key(app, ["predict"])
    first = await _submit(idle, key, model_ids["a"], "high")
    second = await _submit(idle, key, model_ids["a"])

    listed = await _ok(idle_url, key, "list")
    assert "queued" in _row(listed, first) and "high" in _row(listed, first)
    assert listed.index(second) < listed.index(first)  # newest first
    assert "2 task(s)" in listed
    assert first not in await _ok(idle_url, key, "list", "--limit", "1")
    assert "no tasks" in await _ok(idle_url, key, "list", "--status", "completed")

    shown = json.loads(await _ok(idle_url, key, "show", first))
    assert shown["status"] == "queued" and shown["priority"] == "high"
    cancelled = json.loads(await _ok(idle_url, key, "cancel", first))
    assert cancelled["task_id"] == first and cancelled["status"] == "cancelled"
    assert "cancelled" in _row(await _ok(idle_url, key, "list", "--status", "cancelled"), first)

    again = json.loads(await _ok(idle_url, key, "cancel", first))  # idempotent
    assert again["status"] == "cancelled" and again["completed_at"] == cancelled["completed_at"]
    unknown = await _jobs(idle_url, key, "show", NO_SUCH_TASK)
    assert unknown.exit_code == 1 and unknown.stderr.startswith("404:"), unknown.output
    bad_status = await _jobs(idle_url, key, "list", "--status", "done")
    assert bad_status.exit_code == 2  # a usage error, before any request


async def test_a_completed_task_is_listed_and_shown_with_its_result(
    app: FastAPI, client: httpx.AsyncClient, app_url: str, model_ids: dict[str, int]
) -> None:
    key = await make_key(app, ["predict"])
    task_id = await _submit(app, key, model_ids["a"])

    async def completed() -> bool:
        task = await client.get(
            f"/api/inference/predict/async/{task_id}", headers={"X-API-Key": key}
        )
        return bool(task.json()["status"] == "completed")

    await until(completed, f"task {task_id} did not complete")
    shown = json.loads(await _ok(app_url, key, "show", task_id))
    assert shown["result"]["resolved_model_id"] == model_ids["a"] and shown["attempts"] == 1
    assert "completed" in _row(await _ok(app_url, key, "list", "--status", "completed"), task_id)
    refused = await _jobs(app_url, key, "cancel", task_id)
    assert refused.exit_code == 1 and refused.stderr.startswith("409:"), refused.output
    assert "only a queued task can be cancelled" in refused.stderr


def _waiting(output: str) -> dict[str, int]:
    return {
        level: int(re.findall(rf"{level}\W+(\d+)", output)[-1])
        for level in ("urgent", "high", "normal", "low")
    }


async def test_watch_shows_the_queues_and_the_worker_holding_a_task(
    app: FastAPI, idle: FastAPI, idle_url: str, model_ids: dict[str, int]
) -> None:
    key = await make_key(app, ["predict"])
    reader = await make_key(app, ["read"])
    for priority in ("urgent", "urgent", "low"):
        await _submit(idle, key, model_ids["a"], priority)
    holding = Recorder()
    holding.gate.clear()  # the model call does not return while the test looks
    worker = worker_on(queue_of(idle), holding, concurrency=1)
    worker.start()
    try:

        async def held() -> bool:
            return worker.running == 1

        await until(held, "the worker did not take a task")
        transport = httpx.ASGITransport(app=idle)
        async with AsyncClient("http://conch", reader, transport=transport) as conch:
            queues = await conch.task_queues()
        watched = await _ok(idle_url, reader, "watch", "--count", "2", "--interval", "0.1")
    finally:
        holding.gate.set()
        await worker.stop()
    assert _waiting(watched) == queues["depths"] and queues["depths"]["urgent"] >= 1
    assert "running 1" in watched
    assert worker.consumer in _row(watched, worker.consumer)

    refused = await _jobs(idle_url, key, "watch", "--count", "1")
    assert refused.exit_code == 1 and refused.stderr.startswith("403:")
    assert "needs an API key with the 'read' scope" in refused.stderr


async def test_ctrl_c_ends_a_watch_cleanly(app: FastAPI, idle_url: str) -> None:
    reader = await make_key(app, ["read"])
    # A terminal, as far as rich can tell: the live view redraws in place.
    env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "control_plane.cli", "jobs", "watch",
        "--url", idle_url, "--api-key", reader, "--interval", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    seen = b""
    try:
        while b"waiting per priority" not in seen:
            chunk = await asyncio.wait_for(process.stdout.read(4096), timeout=60)
            assert chunk, f"watch ended first: {(await process.stderr.read()).decode()}"
            seen += chunk
        process.send_signal(signal.SIGINT)
        rest, errors = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, errors.decode()
    assert b"Traceback" not in errors and b"Aborted" not in errors + rest


def test_each_jobs_command_names_its_scope_in_help() -> None:
    for command in ("list", "show", "cancel", "watch"):
        result = CliRunner().invoke(cli, ["jobs", command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert " scope" in result.stdout and "CONCH_URL" in result.stdout, command
