"""Bad entries in the model repository are reported and skipped; the rest keeps converging.

Real entries in the session's model repository, served by the session's embedded
Triton: a broken symlink (which makes Triton refuse its whole repository index),
a directory without config.pbtxt, a config that does not parse, and a registered
model whose ONNX file Triton refuses. Each is removed again after its test.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conch_manifest.layout import manifest_path
from conch_manifest.schema import sha256_file
from tests.control_plane.conftest import register_model, state_of
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import until, until_served


async def _reconcile_pass(app: FastAPI) -> None:
    """Until one whole pass has run after this call (one in progress may predate it)."""
    reconciler = state_of(app).reconciler
    wanted = reconciler.passes + 2

    async def passed() -> bool:
        reconciler.wake()
        return reconciler.passes >= wanted

    await until(passed, "reconciliation passes stopped")
    assert reconciler.last_error is None, reconciler.last_error


async def _health(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    response = await client.get("/inference/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, response.text


def _write_refused_model(repository: Path, name: str) -> None:
    """Registration accepts it (the manifest vouches for its files); Triton cannot load it."""
    write_recommender(repository, name, seed=51)
    model_file = repository / name / "1" / "model.onnx"
    model_file.write_bytes(b"this is not an onnx model" * 10)
    path = manifest_path(repository, name)
    manifest = json.loads(path.read_text())
    manifest["files"]["1/model.onnx"] = sha256_file(model_file)
    path.write_text(json.dumps(manifest))


@pytest.fixture
async def cleanup(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> AsyncIterator[tuple[list[Path], list[int]]]:
    """Paths to remove from the repository and model ids to delete, after the test."""
    paths: list[Path] = []
    model_ids: list[int] = []
    yield paths, model_ids
    for model_id in model_ids:  # unloaded and forgotten: nothing failed stays behind
        await client.delete(f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key})
    for path in paths:
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


async def test_bad_entries_are_reported_and_skipped_while_the_rest_converges(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_repository: Path,
    cleanup: tuple[list[Path], list[int]],
) -> None:
    paths, model_ids = cleanup
    tag = uuid.uuid4().hex[:8]
    broken = model_repository / f"cptest_broken_{tag}"
    no_config = model_repository / f"cptest_noconfig_{tag}"
    bad_config = model_repository / f"cptest_badconfig_{tag}"
    refused = f"cptest_refused_{tag}"
    paths += [broken, no_config, bad_config, model_repository / refused]
    broken.symlink_to(model_repository.parent / f"gone-{tag}")
    (no_config / "1").mkdir(parents=True)
    write_recommender(model_repository, bad_config.name, seed=52)
    (bad_config / "config.pbtxt").write_text("this is { not a model config")
    _write_refused_model(model_repository, refused)

    # With all of that in the repository, a new model registers, loads and serves...
    good = f"cptest_after_{tag}"
    paths.append(model_repository / good)
    write_recommender(model_repository, good, seed=54)
    healthy_id = await register_model(client, admin_key, good)
    model_ids.append(healthy_id)
    await until_served(client, healthy_id, predict_key)
    model_ids.append(await register_model(client, admin_key, refused))

    # ...and reconciliation keeps passing, every time.
    await _reconcile_pass(app)
    await _reconcile_pass(app)

    async def all_reported() -> bool:
        body, _ = await _health(client)
        return refused in body["bad_entries"]  # once its load has failed

    await until(all_reported, "the refused model was never reported")
    body, text = await _health(client)
    assert body["status"] == "degraded" and body["components"]["repository"] == "degraded"
    assert body["components"]["triton"] == "ok" and body["loaded_models"] >= 1, body
    bad = body["bad_entries"]
    assert bad[broken.name] == "broken symbolic link", bad
    assert bad[no_config.name] == "no config.pbtxt", bad
    assert bad[bad_config.name].startswith("config.pbtxt is not a valid model configuration")
    assert "could not be loaded" in bad[refused] and "model.onnx" in bad[refused], bad
    # Names and reasons only: no path of this host.
    assert str(model_repository.parent) not in text and "site-packages" not in text, text
    info = await client.get(f"/api/v1/models/{healthy_id}", headers={"X-API-Key": admin_key})
    assert info.json()["repository_error"] is None, info.text

    # Repaired, the entries leave the report at the next pass.
    for path in (broken, no_config, bad_config):
        _remove(path)
    await _reconcile_pass(app)
    body, _ = await _health(client)
    assert not {broken.name, no_config.name, bad_config.name} & body["bad_entries"].keys()
    assert (body["components"]["repository"] == "ok") == (not body["bad_entries"]), body


async def test_a_registered_model_whose_entry_breaks_says_so_and_keeps_serving(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_repository: Path,
    cleanup: tuple[list[Path], list[int]],
) -> None:
    paths, model_ids = cleanup
    tag = uuid.uuid4().hex[:8]
    name = f"cptest_breaks_{tag}"
    entry = model_repository / name
    aside = model_repository / f".cptest_aside_{tag}"
    write_recommender(model_repository, name, seed=53)
    model_id = await register_model(client, admin_key, name)
    model_ids.append(model_id)
    paths += [entry, aside]
    await until_served(client, model_id, predict_key)

    entry.rename(aside)  # the directory is replaced by a link to nowhere
    entry.symlink_to(model_repository.parent / f"gone-{tag}")
    await _reconcile_pass(app)

    headers = {"X-API-Key": admin_key}
    info = (await client.get(f"/api/v1/models/{model_id}", headers=headers)).json()
    assert info["repository_error"] == "broken symbolic link", info
    assert info["load_state"] == "ready", info  # Triton still holds the loaded copy
    reload = await client.post(f"/api/v1/models/{model_id}/reload", headers=headers)
    assert reload.status_code == 409, reload.text
    assert reload.json()["details"]["repository_error"] == "broken symbolic link"
    await until_served(client, model_id, predict_key)  # the copy in Triton serves on
    body, _ = await _health(client)
    assert body["bad_entries"][name] == "broken symbolic link", body

    entry.unlink()  # repaired: the report clears
    aside.rename(entry)
    await _reconcile_pass(app)
    info = (await client.get(f"/api/v1/models/{model_id}", headers=headers)).json()
    assert info["repository_error"] is None, info
