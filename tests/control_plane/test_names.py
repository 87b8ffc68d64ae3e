"""Names and manifest paths stay inside the model repository; error bodies keep its
location (and Triton's address) to the logs."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conch_embedded.process import free_port
from conch_manifest.layout import manifest_path
from conch_manifest.schema import sha256_file
from control_plane.app import create_app
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key
from tests.control_plane.recommender_model import write_recommender

ERROR_FIELDS = {"error", "message", "details", "timestamp", "request_id"}

# Files opened while a `_files_opened_beside()` block runs. Audit hooks cannot be removed:
# the one hook, installed on first use, returns at once when nobody is listening.
_recording: list[list[str]] = []
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _recording[-1].append(os.path.realpath(os.fsdecode(args[0])))


@contextmanager
def _files_opened_beside(repository: Path) -> Iterator[list[str]]:
    """Yields a list that, once the block ends, holds every file opened next to the
    repository (in its parent, where '..' leads) rather than inside it."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    inside = os.path.realpath(repository)
    parent = os.path.dirname(inside)
    opened: list[str] = []
    beside: list[str] = []
    _recording.append(opened)
    try:
        yield beside
    finally:
        _recording.remove(opened)
        beside.extend(
            path
            for path in opened
            if os.path.commonpath([path, parent]) == parent
            and os.path.commonpath([path, inside]) != inside
        )


async def _register(client: httpx.AsyncClient, key: str, name: str) -> httpx.Response:
    return await client.post(
        "/api/v1/models", json={"triton_name": name}, headers={"X-API-Key": key}
    )


def _assert_error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_FIELDS
    return body


def _assert_private(response: httpx.Response, repository: Path, *hosts: str) -> None:
    """Neither the repository's location nor Triton's address anywhere in the response."""
    text = response.text + json.dumps(dict(response.headers))
    for secret in {str(repository), str(repository.resolve()), *hosts}:
        assert secret not in text, f"{secret!r} leaked: {response.text}"


@pytest.mark.parametrize(
    "name",
    ["..", "../x", ".hidden", "a/b", "a\x00b", "n" * 201, "a..b", "./x", "a\\b", "é", "x\n"],
    ids=["dotdot", "parent", "hidden", "slash", "nul", "long", "inner-dotdot", "dot-slash",
         "backslash", "unicode", "newline"],
)  # fmt: skip
async def test_names_leading_out_of_the_repository_are_422_before_any_lookup(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path, name: str
) -> None:
    with _files_opened_beside(model_repository) as beside:
        response = await _register(client, admin_key, name)
    body = _assert_error_body(response, 422)
    assert body["error"] == "ValidationError"
    (problem,) = body["details"]["errors"]
    assert problem["loc"] == ["body", "triton_name"]
    assert "invalid model name" in problem["msg"] and "letters, digits" in problem["msg"]
    assert beside == []  # not even an attempt to open ../manifest.json
    _assert_private(response, model_repository)


async def test_valid_names_still_register(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    for name in ("cptest_names.v2-ok", "9lives"):
        write_recommender(model_repository, name, seed=33)
        assert (await _register(client, admin_key, name)).status_code == 201


def _manifest_with_files(model_repository: Path, name: str, files: dict[str, str]) -> None:
    path = manifest_path(model_repository, name)
    manifest = json.loads(path.read_text())
    manifest["files"] = {**manifest["files"], **files}
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("label", "entry", "reason"),
    [
        ("parent", "../cptest_escape_secret.bin", "'..' component"),
        ("inner-parent", "1/../../cptest_escape_secret.bin", "'..' component"),
        ("absolute", "/etc/hostname", "absolute path"),
        ("empty", "", "empty"),
    ],
)
async def test_manifest_files_escaping_the_model_are_refused(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    label: str,
    entry: str,
    reason: str,
) -> None:
    # A real file where the entry points, with the right hash: only the path is wrong.
    target = model_repository / "cptest_escape_secret.bin"
    target.write_bytes(b"not part of any model")
    name = f"cptest_escape_{label}"
    write_recommender(model_repository, name, seed=34)
    _manifest_with_files(model_repository, name, {entry: sha256_file(target)})
    body = _assert_error_body(await _register(client, admin_key, name), 422)
    assert f"manifest of {name!r} is invalid" in body["message"]
    assert "files" in body["message"] and reason in body["message"]


async def test_manifest_files_linking_out_of_the_model_are_refused(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    target = model_repository / "cptest_escape_link_target.bin"
    target.write_bytes(b"outside the model directory")
    name = "cptest_escape_link"
    root = write_recommender(model_repository, name, seed=35)
    (root / "1" / "weights.bin").symlink_to(target)
    _manifest_with_files(model_repository, name, {"1/weights.bin": sha256_file(target)})
    response = await _register(client, admin_key, name)
    body = _assert_error_body(response, 422)
    assert body["message"] == f"manifest of {name!r} lists files outside the model's directory"
    assert body["details"]["files"] == ["1/weights.bin"]
    _assert_private(response, model_repository)


async def test_a_model_whose_files_were_removed_answers_without_paths(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    name = "cptest_names_removed"
    root = write_recommender(model_repository, name, seed=36)
    registered = await _register(client, admin_key, name)
    assert registered.status_code == 201, registered.text
    model_id = registered.json()["id"]
    shutil.rmtree(root)
    headers = {"X-API-Key": admin_key}

    predict = await client.post(
        f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers=headers
    )
    body = _assert_error_body(predict, 500)  # seed 000: a model that cannot be loaded
    assert body["message"] == f"manifest of model {model_id} is missing in the model repository"
    _assert_private(predict, model_repository)

    again = await _register(client, admin_key, name)
    assert _assert_error_body(again, 404)["details"] == {"triton_name": name}
    _assert_private(again, model_repository)

    for response in (
        await client.get(f"/api/v1/models/{model_id}", headers=headers),
        await client.post(f"/api/v1/models/{model_id}/load", headers=headers),
        await client.post(
            f"/api/v1/models/{model_id}/predict", json={"data": [[0.0]]}, headers=headers
        ),
    ):
        _assert_private(response, model_repository)


@pytest.fixture
async def closed_http_port_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, str]]:
    """A replica whose Triton HTTP address is a closed port (gRPC, for loads, works)."""
    address = f"127.0.0.1:{free_port()}"
    replica = create_app(
        settings.model_copy(update={"triton_http_url": address, "triton_infer_protocol": "http"}),
        migrate=False,
    )
    async with replica.router.lifespan_context(replica):
        yield replica, address


async def test_a_prediction_with_tritons_http_port_closed_names_no_address(
    closed_http_port_app: tuple[FastAPI, str],
    model_ids: dict[str, int],
    model_repository: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    replica, address = closed_http_port_app
    key = await make_key(replica, ["predict"])
    transport = httpx.ASGITransport(app=replica)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
        response = await http.post(
            f"/inference/predict/{model_ids['a']}",
            json={"user_id": "u1"},
            headers={"X-API-Key": key},
        )
    # 503 from the predict itself, 502 when the load's warm-up meets the closed port first.
    body = _assert_error_body(response, response.status_code)
    assert (response.status_code, body["error"]) in {
        (503, "TritonUnavailableError"),
        (502, "TritonError"),
    }
    assert "Triton's HTTP endpoint is unreachable" in body["message"]
    _assert_private(response, model_repository, address, ":" + address.rsplit(":", 1)[1])
    # The operator still learns where: the log line carries the address and request id.
    logged = [r.getMessage() for r in caplog.records if address in r.getMessage()]
    assert logged and body["request_id"] in logged[0]
