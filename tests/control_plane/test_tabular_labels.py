"""Class labels come back over REST in the source model's own type."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from conch_manifest.schema import MANIFEST_FILENAME
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from exporters.torch_exporter import export_torch
from tests.control_plane.conftest import register_model
from tests.control_plane.test_tabular import _predict

ANIMALS = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def labelled_models(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("labels")
    x, y = load_iris(return_X_y=True)
    rows = x.astype(np.float32)
    integer = LogisticRegression(max_iter=500).fit(x, y)  # classes_ int64: 0, 1, 2
    named = LogisticRegression(max_iter=500).fit(x, np.array(ANIMALS)[y])  # classes_ str
    joblib.dump(integer, workdir / "integer.joblib")
    joblib.dump(named, workdir / "named.joblib")
    torch.manual_seed(0)
    network = torch.nn.Linear(4, 3).eval()
    torch.save(network, workdir / "network.pt")
    with ExportSession(model_repository) as session:
        common = {"repository": model_repository, "session": session}
        exported = {
            "integer": export_sklearn(
                workdir / "integer.joblib", name="labels-int", sample=rows[:20], **common
            ),
            "old": export_sklearn(
                workdir / "integer.joblib", name="labels-old", sample=rows[:20], **common
            ),
            "named": export_sklearn(
                workdir / "named.joblib", name="labels-str", sample=rows[:20], **common
            ),
            "network": export_torch(
                workdir / "network.pt", name="labels-torch", sample=rows[:20],
                labels=ANIMALS, **common,
            ),
        }  # fmt: skip
    # A manifest written before class_label_type existed: labels as text, no type.
    old = model_repository / exported["old"].triton_name / MANIFEST_FILENAME
    manifest = json.loads(old.read_text())
    for output in manifest["outputs"]:
        del output["class_label_type"]
    old.write_text(json.dumps(manifest))
    names = {kind: result.triton_name for kind, result in exported.items()}
    return {"names": names, "integer": integer, "named": named, "network": network, "x": rows}


async def _predictions(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, triton_name: str, rows: list
) -> dict:
    model_id = await register_model(client, admin_key, triton_name)
    response = await _predict(client, model_id, rows, predict_key)
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


async def test_integer_classes_answer_json_integers(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, labelled_models: dict
) -> None:
    rows = labelled_models["x"][::15]  # every class
    name = labelled_models["names"]["integer"]
    body = await _predictions(client, admin_key, predict_key, name, rows.tolist())
    expected = labelled_models["integer"].predict(rows).tolist()
    assert set(expected) == {0, 1, 2}
    assert body["predictions"] == expected
    assert all(type(label) is int for label in body["predictions"])


async def test_string_classes_answer_strings(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, labelled_models: dict
) -> None:
    rows = labelled_models["x"][::15]
    name = labelled_models["names"]["named"]
    body = await _predictions(client, admin_key, predict_key, name, rows.tolist())
    assert body["predictions"] == labelled_models["named"].predict(rows).tolist()
    assert set(body["predictions"]) == set(ANIMALS)


async def test_a_manifest_without_the_label_type_answers_strings(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, labelled_models: dict
) -> None:
    rows = labelled_models["x"][::15]
    name = labelled_models["names"]["old"]
    body = await _predictions(client, admin_key, predict_key, name, rows.tolist())
    assert body["predictions"] == [str(c) for c in labelled_models["integer"].predict(rows)]


async def test_a_network_with_labels_answers_its_labels(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, labelled_models: dict
) -> None:
    rows = labelled_models["x"][:40]
    name = labelled_models["names"]["network"]
    body = await _predictions(client, admin_key, predict_key, name, rows.tolist())
    with torch.inference_mode():
        scores = labelled_models["network"](torch.from_numpy(rows)).numpy()
    assert body["predictions"] == [ANIMALS[i] for i in scores.argmax(axis=1)]
    np.testing.assert_allclose(body["outputs"]["OUTPUT__0"], scores, rtol=1e-4, atol=1e-5)
    assert "probabilities" not in body or body["probabilities"] is None
