"""Failure paths: a model Triton cannot load (500), Triton, SQL or Redis unreachable
(503), docs served."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
from fastapi import FastAPI

from conch_embedded.process import free_port
from control_plane.app import create_app
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key
from tests.control_plane.recommender_model import write_recommender


def _corrupt_model(repository: Path, name: str) -> None:
    """A model whose manifest is intact (it registers) but whose ONNX file is garbage."""
    root = write_recommender(repository, name, seed=9)
    (root / "1" / "model.onnx").write_bytes(b"not an onnx file")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["1/model.onnx"] = hashlib.sha256(b"not an onnx file").hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


async def test_model_that_cannot_load_is_500_with_tritons_reason(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_repository: Path
) -> None:
    _corrupt_model(model_repository, "cptest_broken")
    registered = await client.post(
        "/api/v1/models", json={"triton_name": "cptest_broken"}, headers={"X-API-Key": admin_key}
    )
    assert registered.status_code == 201, registered.text
    response = await client.post(
        f"/inference/predict/{registered.json()['id']}",
        json={"user_id": "u1"},
        headers={"X-API-Key": predict_key},
    )
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "ModelLoadError" and "cptest_broken" in body["message"]
    assert "Traceback" not in response.text
    again = await client.post(
        f"/inference/predict/{registered.json()['id']}",
        json={"user_id": "u1"},
        headers={"X-API-Key": predict_key},
    )  # answered from the failure cache, without asking Triton to load again
    assert again.status_code == 500 and again.json()["message"] == body["message"]
    # Deleted, it is no longer this replica's problem: health reports it no more.
    health = (await client.get("/inference/health")).json()
    assert "cptest_broken" in health["bad_entries"]
    deleted = await client.delete(
        f"/api/v1/models/{registered.json()['id']}", headers={"X-API-Key": admin_key}
    )
    assert deleted.status_code == 204
    assert "cptest_broken" not in (await client.get("/inference/health")).json()["bad_entries"]


async def test_tampered_files_are_refused_at_registration(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    root = write_recommender(model_repository, "cptest_tampered", seed=3)
    (root / "config.pbtxt").write_text((root / "config.pbtxt").read_text() + "\n# edited\n")
    response = await client.post(
        "/api/v1/models", json={"triton_name": "cptest_tampered"}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 422
    assert response.json()["details"]["files"] == ["config.pbtxt"]


async def test_unreachable_triton_is_503(
    app: FastAPI, settings: Settings, model_ids: dict[str, int]
) -> None:
    token = await make_key(app, ["predict"])
    down = create_app(
        settings.model_copy(update={"triton_grpc_url": f"127.0.0.1:{free_port()}"}),
        migrate=False,
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://down") as client:
            response = await client.post(
                f"/inference/predict/{model_ids['a']}",
                json={"user_id": "u1"},
                headers={"X-API-Key": token},
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "TritonUnavailableError"
            health = await client.get("/inference/health")
            assert health.status_code == 503 and health.json()["status"] == "unhealthy"


async def test_unreachable_database_is_503_with_retry_after(
    app: FastAPI, settings: Settings
) -> None:
    token = await make_key(app, ["read", "predict"])  # well formed: looked up in SQL
    # A real PostgreSQL URL on a port where nothing listens: the driver's own refusal.
    down = create_app(
        settings.model_copy(
            update={"database_url": f"postgresql://conch@127.0.0.1:{free_port()}/conch"}
        ),
        migrate=False,
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://down") as client:
            keys = await client.get("/api/v1/keys", headers={"X-API-Key": token})
            # The prediction fast lane answers through the same converter.
            predict = await client.post(
                "/inference/predict/1", json={"user_id": "u1"}, headers={"X-API-Key": token}
            )
    for response in (keys, predict):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "ServiceUnavailableError"
        assert response.json()["message"] == "the database is unavailable; retry shortly"
        assert response.headers["retry-after"] == "5"
        assert "127.0.0.1" not in response.text


async def test_unreachable_redis_is_503_for_async_tasks(
    app: FastAPI, settings: Settings, model_ids: dict[str, int]
) -> None:
    token = await make_key(app, ["predict"])
    closed = f"redis://127.0.0.1:{free_port()}/0"
    down = create_app(
        settings.model_copy(update={"redis_url": closed, "model_events_redis_url": closed}),
        migrate=False,
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://down") as client:
            headers = {"X-API-Key": token}
            submit = await client.post(
                "/api/inference/predict/async",
                json={"data": [[1.0]], "model_id": model_ids["a"]},
                headers=headers,
            )
            poll = await client.get(
                f"/api/inference/predict/async/task_{'0' * 24}", headers=headers
            )
    for response in (submit, poll):
        assert response.status_code == 503, response.text
        assert response.json()["message"] == "Redis is unavailable; retry shortly"
        assert response.headers["retry-after"] == "5"
        assert "127.0.0.1" not in response.text


async def test_interactive_docs_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/inference/predict/{model_id}" in schema["paths"]
