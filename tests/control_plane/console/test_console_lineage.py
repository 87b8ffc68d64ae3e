"""A model's lineage on the console: a real `--optimize` export and a plain one of the same
ONNX file, published into the app's repository, registered, and read on the model pages."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from conch_manifest.schema import MANIFEST_FILENAME
from exporters.onnx_exporter import export_onnx
from exporters.onnx_optimize import OnnxGraphOptimization
from exporters.pipeline import ExportResult
from exporters.session import ExportSession
from tests.control_plane.conftest import make_key, register_model, state_of
from tests.control_plane.console.conftest import SignedIn
from tests.control_plane.test_model_import import write_linear_onnx


def _export_both(source: Path, repository: Path) -> dict[str, ExportResult]:
    with ExportSession(repository) as session:  # one private parity Triton for both
        return {
            label: export_onnx(
                source,
                name="console-linear",
                repository=repository,
                session=session,
                transforms=[OnnxGraphOptimization()] if label == "optimized" else [],
            )
            for label in ("optimized", "plain")
        }


@pytest.fixture(scope="module")
async def exported(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, int]:
    source = tmp_path_factory.mktemp("lineage") / "linear.onnx"
    write_linear_onnx(source)  # MatMul + Add + Identity: the basic level fuses them
    results = await asyncio.to_thread(_export_both, source, model_repository)
    return {
        label: await register_model(client, admin_key, result.triton_name)
        for label, result in results.items()
    }


async def test_an_optimized_model_shows_what_optimized_it_and_its_parity(
    app: FastAPI, exported: dict[str, int], signed_in: SignedIn
) -> None:
    async with signed_in(await make_key(app, ["read"])) as console:
        optimized = await console.http.get(f"/console/models/{exported['optimized']}")
        plain = await console.http.get(f"/console/models/{exported['plain']}")
        listing = await console.http.get("/console/models")
    assert optimized.status_code == plain.status_code == listing.status_code == 200
    page = html.unescape(optimized.text)
    assert "onnxruntime graph optimization, basic level: 3 → 1 graph nodes" in page
    assert "Exported from</dt><dd>onnx (onnx " in page  # the versions that read it
    assert "onnx for Triton&#39;s onnxruntime backend" in optimized.text
    assert "passed on " in page and ", on the optimized graph" in page
    assert "its own export optimized the graph it publishes" in page
    other = html.unescape(plain.text)
    assert "none: the model file is as converted" in other
    assert ", on the optimized graph" not in other
    rows = html.unescape(listing.text)
    assert "optimized · from onnx (" in rows and "as converted · from onnx (" in rows


async def test_a_model_whose_manifest_is_unreadable_says_so(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    exported: dict[str, int],
    signed_in: SignedIn,
) -> None:
    detail = await client.get(
        f"/api/v1/models/{exported['plain']}", headers={"X-API-Key": admin_key}
    )
    assert detail.status_code == 200, detail.text
    triton_name = detail.json()["triton_name"]
    manifest = model_repository / triton_name / MANIFEST_FILENAME
    saved = manifest.read_bytes()
    manifest.write_text("{not json")
    try:
        state_of(app).manifests.forget(triton_name)
        async with signed_in(await make_key(app, ["read"])) as console:
            page = await console.http.get(f"/console/models/{exported['plain']}")
    finally:
        manifest.write_bytes(saved)
        state_of(app).manifests.forget(triton_name)
    assert page.status_code == 200
    assert "manifest could not be read" in page.text
