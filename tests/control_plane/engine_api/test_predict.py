"""Seed 002's predictions (/api/inference/predict, /batch, /multi-batch) on real models."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from fastapi import FastAPI
from sklearn.datasets import load_iris
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from conch_manifest.layout import manifest_path
from conch_manifest.schema import Manifest, ParityResult, TensorSpec, sha256_file
from control_plane.model_core.stats import InferenceStats
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from tests.control_plane.conftest import make_key, make_project, state_of
from tests.control_plane.triton.python_models import (
    LENGTH_OUTPUT,
    TEXT_INPUT,
    UPPER_OUTPUT,
    write_text_model,
)
from tests.control_plane.triton.slow_model import write_slow_model

FEATURES = ["sepal length", "sepal width", "petal length", "petal width"]
ERROR_FIELDS = {"error", "message", "details", "timestamp", "request_id"}
TEXTS = ["great lovely food", "awful rude service", "excellent fast", "cold dirty late"]
TEXT_LABELS = ["positive", "negative", "positive", "negative"]


@pytest.fixture(scope="module")
def exported(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("engine_predict")
    suffix = uuid.uuid4().hex[:6]
    iris_x, iris_y = load_iris(return_X_y=True)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        iris_x, iris_y
    )
    joblib.dump(classifier, workdir / "iris.joblib")
    text = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])
    text.fit(TEXTS * 5, TEXT_LABELS * 5)
    joblib.dump(text, workdir / "text.joblib")
    with ExportSession(model_repository) as session:
        iris = export_sklearn(
            workdir / "iris.joblib",
            name=f"engine-iris-{suffix}",
            repository=model_repository,
            sample=iris_x[:20].astype(np.float32),
            feature_names=FEATURES,
            session=session,
        )
        texts = export_sklearn(
            workdir / "text.joblib",
            name=f"engine-text-{suffix}",
            repository=model_repository,
            sample=TEXTS,
            session=session,
        )
    slow = f"cptest_engine_slow_{suffix}"
    write_slow_model(model_repository, slow)
    upper = f"cptest_engine_upper_{suffix}"
    _write_upper_model(model_repository, upper)
    return {
        "iris": (iris.triton_name, f"engine-iris-{suffix}", classifier, iris_x.astype(np.float32)),
        "text": (texts.triton_name, text),
        "slow": slow,
        "upper": upper,
    }


def _write_upper_model(repository: Path, triton_name: str) -> None:
    """The gateway tests' BYTES model (text in, upper-cased text and lengths out), with a
    manifest so that it can be registered."""
    root = write_text_model(repository, triton_name)
    rels = [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()]
    manifest = Manifest(
        name=f"{triton_name}-upper",
        triton_name=triton_name,
        framework="pytorch",
        task="other",
        format="torchscript",
        backend="python",
        created_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
        files={rel: sha256_file(root / rel) for rel in rels if rel != "manifest.json"},
        inputs=[TensorSpec(name=TEXT_INPUT, datatype="BYTES", shape=[-1, 1])],
        outputs=[
            TensorSpec(name=UPPER_OUTPUT, datatype="BYTES", shape=[-1, 1]),
            TensorSpec(name=LENGTH_OUTPUT, datatype="INT64", shape=[-1, 1]),
        ],
        max_batch_size=8,
        parity=ParityResult(passed=True, rows=0),
    )
    manifest_path(repository, triton_name).write_text(json.dumps(manifest.model_dump(mode="json")))


@pytest.fixture(scope="module")
async def ids(
    client: httpx.AsyncClient, admin_key: str, exported: dict[str, Any]
) -> dict[str, int]:
    names = {
        "iris": exported["iris"][0],
        "text": exported["text"][0],
        "slow": exported["slow"],
        "upper": exported["upper"],
    }
    found = {}
    for label, triton_name in names.items():
        response = await client.post(
            "/api/v1/models", json={"triton_name": triton_name}, headers={"X-API-Key": admin_key}
        )
        assert response.status_code == 201, response.text
        found[label] = response.json()["id"]
    return found


async def _post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str
) -> httpx.Response:
    """A cold model answers 503 + Retry-After while it loads: retried as a client would."""
    for _ in range(120):
        response = await client.post(
            f"/api/inference/{path}", json=body, headers={"X-API-Key": key}
        )
        if response.status_code != 503 or response.json()["error"] != "ModelLoadingError":
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return response


async def test_predict_by_id_name_and_triton_name(
    client: httpx.AsyncClient, predict_key: str, exported: dict[str, Any], ids: dict[str, int]
) -> None:
    triton_name, name, classifier, rows = exported["iris"]
    expected = classifier.predict(rows[:3].astype(np.float64)).tolist()
    for ref in (ids["iris"], str(ids["iris"]), name, triton_name):
        response = await _post(
            client, "predict", {"data": rows[:3].tolist(), "model_id": ref}, predict_key
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"] == expected  # integer classes, as the model has them
        assert "probabilities" not in body  # only when asked (seed 002)
        assert body["model_id"] == ref and body["resolved_model_id"] == ids["iris"]
        assert body["inference_time"] > 0
        assert body["request_id"] == response.headers["X-Request-ID"]
        assert body["timestamp"].endswith("Z")


async def test_named_features_and_probabilities(
    client: httpx.AsyncClient, predict_key: str, exported: dict[str, Any], ids: dict[str, int]
) -> None:
    _, _, classifier, rows = exported["iris"]
    records = [dict(zip(FEATURES, row, strict=True)) for row in rows[:5].tolist()]
    response = await _post(
        client,
        "predict",
        {"data": records, "model_id": ids["iris"], "return_probabilities": True},
        predict_key,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    probabilities = classifier.predict_proba(rows[:5].astype(np.float64))
    assert np.abs(np.asarray(body["probabilities"]) - probabilities).max() < 1e-5
    assert body["predictions"] == classifier.predict(rows[:5].astype(np.float64)).tolist()


async def test_batch_splits_into_batch_size_requests(
    client: httpx.AsyncClient,
    app: FastAPI,
    predict_key: str,
    exported: dict[str, Any],
    ids: dict[str, int],
) -> None:
    _, _, classifier, rows = exported["iris"]
    stats = state_of(app).stats
    assert isinstance(stats, InferenceStats)
    before = stats.model(ids["iris"]).inference_count
    body = {"data": rows[:70].tolist(), "model_id": ids["iris"], "batch_size": 16}
    response = await _post(client, "predict/batch", body, predict_key)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["batch_size"] == 70
    assert answer["predictions"] == classifier.predict(rows[:70].astype(np.float64)).tolist()
    assert answer["average_inference_time"] == pytest.approx(answer["total_inference_time"] / 70)
    assert stats.model(ids["iris"]).inference_count == before + 1  # one prediction, recorded


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ([[1.0, 2.0]], "row 0 has 2 values; input 'input' takes 4: sepal length"),
        ([[1.0, 2.0, "x", 4.0]], "feature 'petal length': expected a number, got a string"),
        (
            [{"sepal length": 1, "sepal width": 2, "petal length": 3}],
            "missing feature 'petal width'",
        ),
        ([dict.fromkeys([*FEATURES, "colour"], 1.0)], "unknown feature 'colour'"),
        ([[1.0, 2.0, 3.0, 1e39]], "feature 'petal width': features must be finite"),
        ([[1.0, 2.0, 3.0, 4.0]] * 1001, "too many rows: 1001; at most 1000"),
    ],
)
async def test_bad_inputs_are_400s_naming_the_feature(
    client: httpx.AsyncClient, predict_key: str, ids: dict[str, int], data: Any, named: str
) -> None:
    response = await _post(client, "predict", {"data": data, "model_id": ids["iris"]}, predict_key)
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == ERROR_FIELDS
    assert named in error["message"]


async def test_request_errors(
    client: httpx.AsyncClient, predict_key: str, ids: dict[str, int]
) -> None:
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"data": [[1.0, 2.0, 3.0, 4.0]]}, 400, "model_id is required"),
        (
            {"data": [[1.0, 2.0, 3.0, 4.0]], "model_id": "no-such-model"},
            404,
            "'no-such-model' not found",
        ),
        ({"data": [[1.0, 2.0, 3.0, 4.0]], "model_id": ids["iris"], "priority": "asap"}, 422, None),
        ({"data": [[1.0, 2.0, 3.0, 4.0]], "model_id": ids["iris"], "timeout_ms": 0}, 422, None),
    ]
    for body, status, message in cases:
        response = await _post(client, "predict", body, predict_key)
        assert response.status_code == status, (body, response.text)
        assert set(response.json()) == ERROR_FIELDS
        if message is not None:
            assert message in response.json()["message"]
    assert (await client.post("/api/inference/predict", json=cases[0][0])).status_code == 401


async def test_priority_levels_are_accepted(
    client: httpx.AsyncClient, predict_key: str, exported: dict[str, Any], ids: dict[str, int]
) -> None:
    _, _, classifier, rows = exported["iris"]
    for priority in ("low", "normal", "high", "urgent"):
        body = {"data": rows[:2].tolist(), "model_id": ids["iris"], "priority": priority}
        response = await _post(client, "predict", body, predict_key)
        assert response.status_code == 200, (priority, response.text)
        assert (
            response.json()["predictions"]
            == classifier.predict(rows[:2].astype(np.float64)).tolist()
        )


async def test_text_classifier_takes_strings_and_records(
    client: httpx.AsyncClient, predict_key: str, exported: dict[str, Any], ids: dict[str, int]
) -> None:
    _, pipeline = exported["text"]
    texts = ["lovely great", "rude cold", "Excellent, fast!"]
    expected = pipeline.predict(texts).tolist()
    for data in (texts, [[t] for t in texts], [{"input": t} for t in texts]):
        response = await _post(
            client, "predict", {"data": data, "model_id": ids["text"]}, predict_key
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected
    refused = await _post(client, "predict", {"data": [3], "model_id": ids["text"]}, predict_key)
    assert refused.status_code == 400
    assert "row 0 of input 'input' is a number" in refused.json()["message"]


async def test_bytes_outputs_are_text(
    client: httpx.AsyncClient, predict_key: str, ids: dict[str, int]
) -> None:
    body = {"data": ["abc", "Déjà"], "model_id": ids["upper"]}
    response = await _post(client, "predict", body, predict_key)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["predictions"] == []
    assert answer["outputs"] == {UPPER_OUTPUT: [["ABC"], ["DéJà"]], LENGTH_OUTPUT: [[3], [6]]}


async def test_a_missed_timeout_is_504_and_counted(
    client: httpx.AsyncClient, app: FastAPI, predict_key: str, ids: dict[str, int]
) -> None:
    warm = await _post(
        client, "predict", {"data": [[0.0, 1.0]], "model_id": ids["slow"]}, predict_key
    )
    assert warm.status_code == 200, warm.text
    assert warm.json()["predictions"] == [1.0]
    errors_before = state_of(app).stats.model(ids["slow"]).error_count
    body = {"data": [[4.0, 0.0]], "model_id": ids["slow"], "timeout_ms": 500}
    response = await _post(client, "predict", body, predict_key)
    assert response.status_code == 504, response.text
    assert set(response.json()) == ERROR_FIELDS
    assert state_of(app).stats.model(ids["slow"]).error_count == errors_before + 1


async def test_multi_batch_fails_items_alone(
    client: httpx.AsyncClient, predict_key: str, exported: dict[str, Any], ids: dict[str, int]
) -> None:
    _, name, classifier, rows = exported["iris"]
    warm = await _post(
        client, "predict", {"data": [[0.0, 1.0]], "model_id": ids["slow"]}, predict_key
    )
    assert warm.status_code == 200, warm.text
    body = {
        "requests": [
            {"request_id": "good", "data": rows[:2].tolist(), "model_id": name},
            {"request_id": "narrow", "data": [[1.0]], "model_id": ids["iris"]},
            {"request_id": "unknown", "data": [[1.0]], "model_id": "nobody"},
            {"request_id": "late", "data": [[6.0, 0.0]], "model_id": ids["slow"]},
            {"data": [{"input": "lovely"}], "model_id": ids["text"]},
        ],
        "batch_timeout_ms": 2000,
        "priority": "high",
    }
    response = await _post(client, "predict/multi-batch", body, predict_key)
    assert response.status_code == 200, response.text
    answer = response.json()
    results = {result["request_id"]: result for result in answer["results"]}
    assert answer["total_requests"] == 5
    assert (answer["successful_requests"], answer["failed_requests"]) == (2, 3)
    assert answer["batch_id"] == response.headers["X-Request-ID"]
    assert 2.0 <= answer["total_time"] < 6.0  # the late item was not waited for
    good = results["good"]
    assert good["status"] == "success" and good["model_id"] == name
    assert good["predictions"] == classifier.predict(rows[:2].astype(np.float64)).tolist()
    statuses = {
        rid: (r["status"], r["error"]["error"])
        for rid, r in results.items()
        if r["status"] == "failed"
    }
    assert statuses == {
        "narrow": ("failed", "BadRequestError"),
        "unknown": ("failed", "ModelNotFoundError"),
        "late": ("failed", "TritonTimeoutError"),
    }
    for rid in statuses:
        assert set(results[rid]["error"]) == ERROR_FIELDS
    assert results[f"{answer['batch_id']}-4"]["predictions"] == ["positive"]


async def test_a_project_key_sees_only_its_models(
    client: httpx.AsyncClient,
    app: FastAPI,
    admin_key: str,
    model_ids: dict[str, int],
    exported: dict[str, Any],
    ids: dict[str, int],
) -> None:
    project = await make_project(client, admin_key, [("main", model_ids["a"], 100)])
    key = await make_key(app, ["predict"], project_id=project.id)
    _, name, _, rows = exported["iris"]
    unknown_id = 2_000_000_000
    for ref, twin in ((ids["iris"], unknown_id), (name, "no-such-model")):
        hidden = await _post(client, "predict", {"data": rows[:1].tolist(), "model_id": ref}, key)
        missing = await _post(client, "predict", {"data": rows[:1].tolist(), "model_id": twin}, key)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["message"] == missing.json()["message"].replace(str(twin), str(ref))
    multi = await _post(
        client,
        "predict/multi-batch",
        {"requests": [{"data": [[1.0]], "model_id": ids["iris"]}]},
        key,
    )
    assert multi.status_code == 200
    assert multi.json()["results"][0]["error"]["error"] == "ModelNotFoundError"
