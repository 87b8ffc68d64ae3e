"""CONCH_TRITON_INFER_PROTOCOL=grpc through the whole API: the same answers as HTTP.

A second replica over the session's Triton sends predictions over gRPC. Its
Triton HTTP address points at a port where nothing listens, so a prediction
that went over HTTP there would answer 503: every 200 below came over gRPC.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from fastapi import FastAPI
from onnx import TensorProto, helper, numpy_helper

from conch_embedded.process import free_port
from conch_manifest.layout import manifest_path
from conch_manifest.schema import Manifest, ParityResult, TensorSpec, sha256_file
from control_plane.app import create_app
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key, make_project, state_of

CLASSIFIER = "cptest_grpc_classifier"
LABELS = ["setosa", "versicolor", "virginica"]
N_FEATURES = 4
MAX_BATCH = 16  # below the row counts sent, so rows are split into several calls

_CONFIG = f"""name: "{CLASSIFIER}"
backend: "onnxruntime"
max_batch_size: {MAX_BATCH}
input [ {{ name: "features" data_type: TYPE_FP32 dims: [ {N_FEATURES} ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {len(LABELS)} ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def _classifier_graph() -> onnx.ModelProto:
    """softmax(x @ W + b): a linear classifier, fixed weights."""
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(N_FEATURES, len(LABELS))).astype(np.float32)
    bias = rng.normal(size=(len(LABELS),)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "weights"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_classifier(repository: Path) -> None:
    root = repository / CLASSIFIER
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "1" / "model.onnx").write_bytes(_classifier_graph().SerializeToString())
    (root / "config.pbtxt").write_text(_CONFIG)
    manifest = Manifest(
        name="grpc-classifier",
        triton_name=CLASSIFIER,
        framework="sklearn",
        task="classification",
        format="onnx",
        backend="onnxruntime",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        files={rel: sha256_file(root / rel) for rel in ("1/model.onnx", "config.pbtxt")},
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, N_FEATURES])],
        outputs=[
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3], class_labels=LABELS)
        ],
        max_batch_size=MAX_BATCH,
        parity=ParityResult(passed=True, rows=0),
    )
    manifest_path(repository, CLASSIFIER).write_text(
        json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    )


@pytest.fixture(scope="module")
async def classifier_id(model_repository: Path, client: httpx.AsyncClient, admin_key: str) -> int:
    write_classifier(model_repository)
    response = await client.post(
        "/api/v1/models", json={"triton_name": CLASSIFIER}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    model_id: int = response.json()["id"]
    return model_id


@pytest.fixture(scope="module")
async def over_grpc(
    settings: Settings, model_ids: dict[str, int], classifier_id: int
) -> AsyncIterator[FastAPI]:
    replica = create_app(
        settings.model_copy(
            update={
                "triton_infer_protocol": "grpc",
                "triton_http_url": f"127.0.0.1:{free_port()}",  # nothing listens there
            }
        ),
        migrate=False,
    )
    async with replica.router.lifespan_context(replica):
        yield replica


def _comparable(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    body.pop("request_id", None)
    body.pop("timestamp", None)
    for result in body.get("results", []):
        result.pop("request_id", None)
    return {"status": response.status_code, "body": body}


async def _post(client: httpx.AsyncClient, path: str, body: Any, key: str) -> httpx.Response:
    """A cold model answers 503 ModelLoadingError while it loads: wait as a client would."""
    for _ in range(60):
        response = await client.post(path, json=body, headers={"X-API-Key": key})
        if response.status_code != 503 or response.json()["error"] != "ModelLoadingError":
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return response


async def test_grpc_replica_answers_as_the_http_one(
    app: FastAPI,
    over_grpc: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
    classifier_id: int,
) -> None:
    # The session app sends predictions over HTTP, this replica has no HTTP client.
    assert state_of(app).triton._http is not None
    assert state_of(over_grpc).triton._http is None
    key = await make_key(app, ["predict"], name="grpc-protocol")
    project = await make_project(client, admin_key, [("Control", model_ids["b"], 1)])
    rows = np.random.default_rng(3).normal(size=(40, N_FEATURES)).round(3).tolist()
    a = model_ids["a"]
    cases: list[tuple[str, Any]] = [
        (f"/inference/predict/{a}", {"user_id": "u0", "cutoff": 5}),
        (f"/inference/predict/{a}", {"user_id": "u3", "cutoff": 1000}),
        (f"/inference/predict/{a}/batch", {"user_ids": ["u1", "nobody", "u2"], "cutoff": 3}),
        (f"/inference/predict/project/{project.id}", {"user_id": "u4"}),
        (f"/api/v1/models/{classifier_id}/predict", {"data": rows[:1]}),
        (f"/api/v1/models/{classifier_id}/predict", {"data": rows}),
    ]
    answers: list[dict[str, Any]] = []
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=over_grpc), base_url="http://g")
    async with other:
        for path, body in cases:
            over_http = await _post(client, path, body, key)
            grpc = await _post(other, path, body, key)
            assert over_http.status_code == 200, (path, over_http.text)
            assert _comparable(grpc) == _comparable(over_http), path
            answers.append(grpc.json())
    # Not vacuous: real items, and every row's class among the manifest's labels.
    assert len(answers[0]["items"]) == 5
    tabular = answers[-1]
    assert len(tabular["predictions"]) == len(rows) == len(tabular["probabilities"])
    assert set(tabular["predictions"]) <= set(LABELS)
    assert len(set(tabular["predictions"])) > 1
