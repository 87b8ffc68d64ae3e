"""One parsed manifest per model and replica: read at registration, then never again.

The API tests count reads of the model's manifest file with a spy on
`Path.read_bytes` (the real read still happens) and the store's own counter; the
model is served by the session's embedded Triton. The store tests below use their
own repository in a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pydantic
import pytest
from fastapi import FastAPI

from conch_manifest.layout import manifest_path
from control_plane.manifests.store import ManifestStore
from tests.control_plane.conftest import state_of
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import DEADLINE_S, until, until_served


class ReadSpy:
    """Counts reads of one file through Path.read_bytes, which still reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0


@pytest.fixture
def spy_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], ReadSpy]:
    original = Path.read_bytes
    spies: list[ReadSpy] = []

    def read_bytes(self: Path) -> bytes:
        for spy in spies:
            if self == spy.path:
                spy.reads += 1
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)

    def spy_on(path: Path) -> ReadSpy:
        spies.append(ReadSpy(path))
        return spies[-1]

    return spy_on


@pytest.fixture
def model_name(model_repository: Path) -> Iterator[str]:
    name = f"cptest_manifests_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=61)
    yield name


async def test_model_info_and_predictions_never_read_the_manifest_again(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_repository: Path,
    model_name: str,
    spy_on: Callable[[Path], ReadSpy],
) -> None:
    store = state_of(app).manifests
    spy = spy_on(manifest_path(model_repository, model_name))
    admin = {"X-API-Key": admin_key}
    registered = await client.post(
        "/api/v1/models", json={"triton_name": model_name}, headers=admin
    )
    assert registered.status_code == 201, registered.text
    model_id = registered.json()["id"]
    assert spy.reads == 1 and store.reads[model_name] == 1  # registration reads it, once

    await until_served(client, model_id, predict_key)  # loaded and warmed up
    spy.reads = 0
    for _ in range(3):
        info = await client.get(f"/api/v1/models/{model_id}", headers=admin)
        assert info.status_code == 200, info.text
        body = info.json()
        assert [t["name"] for t in body["inputs"]] == ["USER_INDEX"], body
        assert body["size_bytes"] > 0, body
        predicted = await client.post(
            f"/inference/predict/{model_id}",
            json={"user_id": "u1"},
            headers={"X-API-Key": predict_key},
        )
        assert predicted.status_code == 200, predicted.text
    assert spy.reads == 0, "GET /models/{id} or a prediction read the manifest file"
    assert store.reads[model_name] == 1  # the runtime cache and GET used the stored one

    deleted = await client.delete(f"/api/v1/models/{model_id}", headers=admin)
    assert deleted.status_code == 204, deleted.text

    async def dropped() -> bool:
        return model_name not in store

    await until(dropped, "the deleted model's manifest stayed in the store")
    gone = await client.get(f"/api/v1/models/{model_id}", headers=admin)
    assert gone.status_code == 404, gone.text


async def test_the_size_comes_from_the_listed_files_and_the_manifest(tmp_path: Path) -> None:
    root = write_recommender(tmp_path, "m_size", seed=62)
    store = ManifestStore(tmp_path)
    stored = await store.get("m_size")
    listed = sum((root / relative).stat().st_size for relative in stored.manifest.files)
    assert stored.size_bytes == listed + manifest_path(tmp_path, "m_size").stat().st_size
    (root / "unlisted.bin").write_bytes(b"x" * 1000)  # not in the manifest: not counted
    assert (await store.get("m_size")).size_bytes == stored.size_bytes


async def test_concurrent_first_reads_share_one_read(tmp_path: Path) -> None:
    write_recommender(tmp_path, "m_shared", seed=63)
    store = ManifestStore(tmp_path)
    first, *rest = await asyncio.gather(*(store.get("m_shared") for _ in range(5)))
    assert all(entry is first for entry in rest)
    assert store.reads["m_shared"] == 1


async def test_a_missing_or_invalid_manifest_leaves_no_entry(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    with pytest.raises(FileNotFoundError):
        await store.get("m_absent")
    assert "m_absent" not in store
    with pytest.raises(FileNotFoundError):  # a name that could leave the repository
        await store.get("../etc")

    write_recommender(tmp_path, "m_broken", seed=64)
    await store.get("m_broken")
    path = manifest_path(tmp_path, "m_broken")
    manifest = json.loads(path.read_text())
    del manifest["inputs"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(pydantic.ValidationError):
        await store.reload("m_broken")  # what registration does: the old entry goes too
    assert "m_broken" not in store
    with pytest.raises(pydantic.ValidationError):
        await store.get("m_broken")
    assert store.reads["m_broken"] == 3


async def test_forget_during_a_read_keeps_the_answer_out_of_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_recommender(tmp_path, "m_raced", seed=65)
    store = ManifestStore(tmp_path)
    original, gate = Path.read_bytes, threading.Event()

    def held_read(self: Path) -> bytes:  # the real read, once the test lets it go
        assert gate.wait(DEADLINE_S)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", held_read)
    reading = asyncio.ensure_future(store.get("m_raced"))

    async def started() -> bool:
        return store.reads["m_raced"] > 0

    await until(started, "the read never started")
    store.forget("m_raced")  # model_deleted arrives while the file is being read
    gate.set()
    assert (await reading).manifest.triton_name == "m_raced"  # answered once...
    assert "m_raced" not in store  # ...never kept
