"""Seed 002's async predictions through the app: submit on one replica, poll on
another, the same answer as the synchronous door, errors before anything is queued."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.jobs.queue import TaskQueue
from control_plane.keys.verifier import KeyVerifier
from control_plane.keys.webhooks import verify_signature
from tests.control_plane.conftest import make_key
from tests.control_plane.engine_api.tabular_model import ROW, export_regressor, predict_rows
from tests.control_plane.jobs.callback_helpers import Receiver
from tests.control_plane.waiting import until

ASYNC = "/api/inference/predict/async"
ERROR_FIELDS = {"error", "message", "details", "timestamp", "request_id"}


@pytest.fixture(scope="module")
async def model_id(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> int:
    triton_name = export_regressor(model_repository, tmp_path_factory.mktemp("async"))
    response = await client.post(
        "/api/v1/models", json={"triton_name": triton_name}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    registered: int = response.json()["id"]
    assert (await predict_rows(client, registered, admin_key)).status_code == 200  # loaded
    return registered


@pytest.fixture(scope="module")
async def other_replica(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A second replica on the same SQL and Redis."""
    replica = create_app(settings, migrate=False)
    async with replica.router.lifespan_context(replica):
        transport = httpx.ASGITransport(app=replica)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica-b") as client:
            yield client


async def _finished(client: httpx.AsyncClient, task_id: str, key: str) -> dict[str, Any]:
    answer: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal answer
        response = await client.get(f"{ASYNC}/{task_id}", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        answer = response.json()
        return answer["status"] in ("completed", "failed")

    await until(finished, f"task {task_id} did not finish")
    return answer


async def test_a_task_submitted_on_one_replica_is_answered_by_another(
    app: FastAPI, client: httpx.AsyncClient, other_replica: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    headers = {"X-API-Key": key}
    body = {"data": ROW * 3, "model_id": model_id, "priority": "high"}
    submitted = await client.post(ASYNC, json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    answer = submitted.json()
    assert answer["status"] == "queued" and answer["priority"] == "high"
    assert answer["queue_position"] >= 1 and answer["task_id"].startswith("task_")
    task = await _finished(other_replica, answer["task_id"], key)
    assert task["status"] == "completed", task
    sync = await client.post(
        "/api/inference/predict", json={"data": ROW * 3, "model_id": model_id}, headers=headers
    )
    assert task["result"]["predictions"] == sync.json()["predictions"]
    assert task["result"]["resolved_model_id"] == model_id and task["attempts"] == 1
    assert task["completed_at"] >= task["started_at"] >= task["created_at"]
    # And the other way round.
    again = await other_replica.post(ASYNC, json=body, headers=headers)
    assert (await _finished(client, again.json()["task_id"], key))["status"] == "completed"


async def test_a_task_is_visible_to_its_key_and_admins_only(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_id: int
) -> None:
    owner = await make_key(app, ["predict"])
    stranger = await make_key(app, ["predict"])
    submitted = await client.post(
        ASYNC, json={"data": ROW, "model_id": model_id}, headers={"X-API-Key": owner}
    )
    task_id = submitted.json()["task_id"]
    hidden = await client.get(f"{ASYNC}/{task_id}", headers={"X-API-Key": stranger})
    unknown = await client.get(f"{ASYNC}/task_{'0' * 24}", headers={"X-API-Key": stranger})
    assert hidden.status_code == unknown.status_code == 404
    assert set(hidden.json()) == ERROR_FIELDS and hidden.json()["error"] == unknown.json()["error"]
    cancel = await client.delete(f"{ASYNC}/{task_id}", headers={"X-API-Key": stranger})
    assert cancel.status_code == 404
    assert (await client.get(f"{ASYNC}/{task_id}", headers={"X-API-Key": admin_key})).is_success
    malformed = await client.get(f"{ASYNC}/../keys", headers={"X-API-Key": owner})
    assert malformed.status_code in (404, 422)


async def test_bad_submissions_are_refused_before_anything_is_queued(
    app: FastAPI, client: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    read_only = await make_key(app, ["read"])
    headers = {"X-API-Key": key}
    infinite_row = b'{"data": [[' + b", ".join([b"1e300"] * 10) + b']], "model_id": %d}' % model_id
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (_json({"data": ROW, "model_id": "no-such-model"}), headers, 404),
        (_json({"data": [[1.0, 2.0]], "model_id": model_id}), headers, 400),
        (infinite_row, headers, 400),
        (_json({"data": ROW, "model_id": model_id, "priority": "asap"}), headers, 422),
        (_json({"data": ROW}), headers, 422),
        (_json({"data": ROW, "model_id": model_id}), {"X-API-Key": read_only}, 403),
        (_json({"data": ROW, "model_id": model_id}), {}, 401),
    ]
    for content, case_headers, status in cases:
        response = await client.post(
            ASYNC, content=content, headers={**case_headers, "Content-Type": "application/json"}
        )
        assert response.status_code == status, (content, response.text)
        assert set(response.json()) == ERROR_FIELDS
    components = app.state.components
    queue = components.get(TaskQueue)
    principal = await components.get(KeyVerifier).verify(components.get(async_sessionmaker), key)
    assert await queue.redis.get(queue.keys.active(principal.key_id)) is None  # nothing queued


def _json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


async def test_an_idempotency_key_makes_a_retry_return_the_same_task(
    app: FastAPI, client: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    headers = {"X-API-Key": key, "Idempotency-Key": "invoice-42"}
    body = {"data": ROW, "model_id": model_id}
    first = await client.post(ASYNC, json=body, headers=headers)
    retried = await client.post(ASYNC, json=body, headers=headers)
    assert first.status_code == retried.status_code == 202
    assert retried.json()["task_id"] == first.json()["task_id"]
    changed = await client.post(ASYNC, json={**body, "data": ROW * 2}, headers=headers)
    assert (
        changed.status_code == 422
        and changed.json()["details"]["task_id"] == first.json()["task_id"]
    )
    task = await _finished(client, first.json()["task_id"], key)
    conflict = await client.delete(f"{ASYNC}/{task['task_id']}", headers={"X-API-Key": key})
    assert conflict.status_code == 409 and conflict.json()["details"]["status"] == "completed"


async def test_the_result_is_posted_to_the_callback_signed_and_retried(
    app: FastAPI, client: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    headers = {"X-API-Key": key}
    secret = await client.get("/api/v1/keys/self/webhook-secret", headers=headers)
    async with Receiver(statuses=[500, 200]) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hooks/conch"
        body = {"data": ROW, "model_id": model_id, "callback_url": url}
        submitted = await client.post(ASYNC, json=body, headers=headers)
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]
        task: dict[str, Any] = {}

        async def delivered() -> bool:
            nonlocal task
            task = (await client.get(f"{ASYNC}/{task_id}", headers=headers)).json()
            return task["callback"]["status"] in ("delivered", "failed")

        await until(delivered, "the callback was not delivered")
    assert task["callback"]["status"] == "delivered"
    assert [a["status_code"] for a in task["callback"]["attempts"]] == [500, 200]
    assert len(receiver.received) == 2
    last = receiver.received[-1]
    posted = orjson.loads(last.body)
    assert posted["task_id"] == task_id and posted["status"] == "completed"
    assert posted["result"] == task["result"]
    webhook = bytes.fromhex(secret.json()["webhook_secret"])
    assert verify_signature(webhook, last.headers["x-conch-signature"], last.body)
    refused = await client.post(
        ASYNC,
        json={**body, "callback_url": "http://hooks.example.com/conch"},
        headers=headers,
    )
    assert refused.status_code == 422 and set(refused.json()) == ERROR_FIELDS
