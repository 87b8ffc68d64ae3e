"""Registration is idempotent for the same model, however often it is re-exported."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx

from conch_manifest.layout import load_manifest, manifest_path
from conch_manifest.schema import sha256_file
from tests.control_plane.recommender_model import write_recommender


async def _register(client: httpx.AsyncClient, key: str, name: str) -> httpx.Response:
    return await client.post(
        "/api/v1/models", json={"triton_name": name}, headers={"X-API-Key": key}
    )


async def test_reexport_of_the_same_files_registers_as_the_same_model(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    name = "cptest_registry_same"
    write_recommender(model_repository, name, seed=11)
    first = await _register(client, admin_key, name)
    assert first.status_code == 201, first.text
    assert first.json()["project_id"] is None  # registered into no project: global

    # Exported again: a new timestamp and parity report, the same files.
    manifest = load_manifest(model_repository, name)
    manifest.created_at = datetime.now(UTC)
    manifest.parity.detail = "re-exported"
    manifest_path(model_repository, name).write_text(manifest.model_dump_json())
    again = await _register(client, admin_key, name)
    assert again.status_code in (200, 201), again.text
    assert again.json()["id"] == first.json()["id"]


async def test_other_content_under_a_registered_name_is_a_conflict(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    name = "cptest_registry_changed"
    root = write_recommender(model_repository, name, seed=12)
    assert (await _register(client, admin_key, name)).status_code == 201

    # Same name, another config: the files (and their hashes) differ.
    config = root / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 64", "max_batch_size: 32"))
    manifest = load_manifest(model_repository, name)
    manifest.files["config.pbtxt"] = sha256_file(config)
    manifest_path(model_repository, name).write_text(manifest.model_dump_json())
    conflict = await _register(client, admin_key, name)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"] == "ConflictError"
