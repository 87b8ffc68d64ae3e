"""The fast lane on its own (no FastAPI, no BodyLimit middleware around it): it
admits the key, its rate limit, scope and resource before it reads a byte of the
body, and reads at most CONCH_MAX_BODY_BYTES."""

from __future__ import annotations

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from control_plane.core.settings import Settings
from control_plane.inference.lane import PredictionLane
from tests.control_plane.asgi_body import CHUNK, Body
from tests.control_plane.conftest import make_key, make_project


async def _fastapi(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError(f"the lane handed {scope['path']} to FastAPI")


async def _lane(app: FastAPI, path: str, headers: dict[str, str], body: Body) -> tuple[int, dict]:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("conch", 80), "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": app,
    }  # fmt: skip
    await PredictionLane(_fastapi)(scope, body, send)  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert isinstance(status, int)
    return status, orjson.loads(content)


JSON = {"content-type": "application/json"}
HUGE = {**JSON, "content-length": str(100 << 20)}


async def test_every_refusal_of_the_key_comes_before_the_body(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    a, b = model_ids["a"], model_ids["b"]
    project = await make_project(client, admin_key, [("Control", a, 1)])
    refusals = [
        ({}, 401, "AuthenticationError"),
        ({"X-API-Key": "conch_" + "A" * 38}, 401, "AuthenticationError"),
        ({"X-API-Key": await make_key(app, ["read"])}, 403, "PermissionDeniedError"),
        (
            {"X-API-Key": await make_key(app, ["predict"], project_id=project.id)},
            404,
            "ModelNotFoundError",
        ),
    ]
    for key, status, error in refusals:
        body = Body([CHUNK] * 1600)  # 100 MiB
        answered, error_body = await _lane(app, f"/inference/predict/{b}", {**key, **HUGE}, body)
        assert (answered, error_body["error"]) == (status, error)
        assert body.taken == 0


async def test_a_key_known_over_its_limit_is_refused_before_the_body(
    app: FastAPI, model_ids: dict[str, int]
) -> None:
    key = {"X-API-Key": await make_key(app, ["predict"], rate_limit="1/minute")}
    path = f"/inference/predict/{model_ids['a']}"
    statuses = []
    while 429 not in statuses:  # the first over the limit ran beside its check
        status, _ = await _lane(app, path, {**key, **JSON}, Body([b'{"user_id": "u1"}']))
        statuses.append(status)
    assert statuses == [200, 429]
    body = Body([CHUNK] * 1600)
    status, error = await _lane(app, path, {**key, **HUGE}, body)
    assert (status, error["error"]) == (429, "RateLimitExceededError")
    assert body.taken == 0


async def test_a_declared_length_over_the_cap_is_413_unread(
    app: FastAPI, settings: Settings, model_ids: dict[str, int]
) -> None:
    key = {"X-API-Key": await make_key(app, ["predict"])}
    headers = {**key, **JSON, "content-length": str(settings.max_body_bytes + 1)}
    body = Body([CHUNK])
    status, error = await _lane(app, f"/inference/predict/{model_ids['a']}", headers, body)
    assert (status, error["error"]) == (413, "PayloadTooLargeError")
    assert error["details"] == {"max_bytes": settings.max_body_bytes}
    assert body.taken == 0


@pytest.mark.parametrize("declared", [False, True])
async def test_a_body_longer_than_the_cap_stops_being_read_at_it(
    app: FastAPI, settings: Settings, model_ids: dict[str, int], declared: bool
) -> None:
    """Chunked, or under a length that lies: refused at the first chunk beyond the cap."""
    key = {"X-API-Key": await make_key(app, ["predict"])}
    framing = {"content-length": "100"} if declared else {"transfer-encoding": "chunked"}
    chunks = settings.max_body_bytes // len(CHUNK) + 1
    body = Body([CHUNK] * (chunks + 100))
    path = f"/api/v1/models/{model_ids['a']}/predict"
    status, error = await _lane(app, path, {**key, **JSON, **framing}, body)
    assert (status, error["error"]) == (413, "PayloadTooLargeError")
    assert error["details"] == {"max_bytes": settings.max_body_bytes}
    assert body.taken == chunks


async def test_a_chunked_body_under_the_cap_is_served(
    app: FastAPI, model_ids: dict[str, int]
) -> None:
    key = {"X-API-Key": await make_key(app, ["predict"])}
    body = Body([b'{"user_id": ', b'"u1", "cutoff": 2}'])
    headers = {**key, **JSON, "transfer-encoding": "chunked"}
    status, payload = await _lane(app, f"/inference/predict/{model_ids['a']}", headers, body)
    assert status == 200 and len(payload["items"]) == 2
    assert body.taken == 2
