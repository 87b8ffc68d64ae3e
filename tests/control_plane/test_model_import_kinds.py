"""`POST /api/inference/models/load` with `compile_model` (onnxruntime's offline graph
optimization) and with a TorchScript archive, each predicted through
`POST /api/inference/predict` and compared with the source model.

The app, its import directory and its keys are test_model_import.py's fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import torch
from fastapi import FastAPI

from tests.control_plane.conftest import make_key
from tests.control_plane.test_model_import import (  # noqa: F401 (fixtures)
    LOAD,
    WEIGHTS,
    http,
    import_app,
    import_dir,
    import_settings,
    repository_entries,
    write_linear_onnx,
    writer,
)

PREDICT = "/api/inference/predict"


@pytest.fixture(scope="module")
async def predictor(import_app: FastAPI) -> dict[str, str]:  # noqa: F811
    return {"X-API-Key": await make_key(import_app, ["predict"], name="import-predictor")}


async def predict(
    http: httpx.AsyncClient,  # noqa: F811
    key: dict[str, str],
    model_id: int,
    rows: np.ndarray,
) -> dict[str, Any]:
    response = await http.post(
        PREDICT, json={"data": rows.tolist(), "model_id": model_id}, headers=key
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_compile_model_optimizes_an_onnx_import_and_predicts_the_same(
    http: httpx.AsyncClient,  # noqa: F811
    writer: dict[str, str],  # noqa: F811
    predictor: dict[str, str],
    import_dir: Path,  # noqa: F811
    model_repository: Path,
) -> None:
    # MatMul + Add + Identity: onnxruntime's basic level fuses them into one Gemm.
    write_linear_onnx(import_dir / "fusable.onnx", bias=4.0)
    plain = await http.post(
        LOAD, json={"model_path": "fusable.onnx", "model_type": "onnx"}, headers=writer
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["compiled"] is False and plain.json()["compile_note"] is None
    body = {"model_path": "fusable.onnx", "model_type": "onnx", "compile_model": True}
    response = await http.post(LOAD, json=body, headers=writer)
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert loaded["compiled"] is True
    note = loaded["compile_note"]
    assert "basic level" in note and "3 -> 1 graph nodes" in note
    assert [s["name"] for s in loaded["steps"]] == [
        "convert", "optimize", "write", "parity", "publish",
    ]  # fmt: skip
    assert all(step["status"] == "ok" for step in loaded["steps"])
    # Another file, so another model: the published graph is the optimized one.
    assert loaded["triton_name"] != plain.json()["triton_name"]
    published = onnx.load(model_repository / loaded["triton_name"] / "1" / "model.onnx")
    assert [node.op_type for node in published.graph.node] == ["Gemm"]

    rows = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    optimized = await predict(http, predictor, loaded["model_id"], rows)
    as_converted = await predict(http, predictor, plain.json()["model_id"], rows)
    np.testing.assert_allclose(
        optimized["outputs"]["y"], as_converted["outputs"]["y"], rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        optimized["outputs"]["y"], rows @ WEIGHTS[0] + 4 * WEIGHTS[1], rtol=1e-5
    )

    # Imported again: already published, and its manifest still says it was optimized.
    again = await http.post(LOAD, json=body, headers=writer)
    assert again.status_code == 200, again.text
    assert again.json()["already_published"] is True and again.json()["compiled"] is True


class Scorer(torch.nn.Module):
    """Two layers; each row's scores depend on that row only, however Triton batches them."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(5, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


async def test_a_torchscript_archive_is_imported_and_predicts_as_the_module(
    http: httpx.AsyncClient,  # noqa: F811
    writer: dict[str, str],  # noqa: F811
    predictor: dict[str, str],
    import_dir: Path,  # noqa: F811
    model_repository: Path,
) -> None:
    torch.manual_seed(0)
    module = Scorer().eval()
    torch.jit.save(torch.jit.script(module), str(import_dir / "scorer.pt"))
    body = {"model_path": "scorer.pt", "model_type": "torchscript", "input_shape": [5]}
    response = await http.post(LOAD, json=body, headers=writer)
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert loaded["framework"] == "pytorch" and loaded["compiled"] is False
    assert loaded["parity"]["passed"] is True and loaded["parity"]["rows"] == 64
    config = (model_repository / loaded["triton_name"] / "config.pbtxt").read_text()
    assert 'backend: "pytorch"' in config

    rows = np.random.default_rng(6).standard_normal((7, 5)).astype(np.float32)
    answer = await predict(http, predictor, loaded["model_id"], rows)
    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    assert answer["predictions"] == []  # no labels: a network's raw outputs, by name
    np.testing.assert_allclose(answer["outputs"]["OUTPUT__0"], expected, rtol=1e-5, atol=1e-6)


async def test_compile_model_is_refused_for_torchscript(
    http: httpx.AsyncClient,  # noqa: F811
    writer: dict[str, str],  # noqa: F811
    import_dir: Path,  # noqa: F811
    model_repository: Path,
) -> None:
    torch.jit.save(torch.jit.script(Scorer().eval()), str(import_dir / "uncompilable.pt"))
    before = repository_entries(model_repository)
    body = {
        "model_path": "uncompilable.pt",
        "model_type": "torchscript",
        "input_shape": [5],
        "compile_model": True,
    }
    response = await http.post(LOAD, json=body, headers=writer)
    assert response.status_code == 422, response.text
    assert "compile_model is not available for torchscript" in response.json()["message"]
    assert response.json()["details"] == {"model_type": "torchscript", "compile_model": True}
    assert repository_entries(model_repository) == before
