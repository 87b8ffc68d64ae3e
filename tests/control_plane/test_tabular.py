"""Feature-row predictions over REST: the same answers scikit-learn gives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from tests.control_plane.conftest import register_model


@pytest.fixture(scope="module")
def tabular_models(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("tabular")
    iris_x, iris_y = load_iris(return_X_y=True)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    classifier.fit(iris_x, iris_y)
    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    regressor = Ridge().fit(diabetes_x, diabetes_y)
    joblib.dump(classifier, workdir / "iris.joblib")
    joblib.dump(regressor, workdir / "diabetes.joblib")
    with ExportSession(model_repository) as session:
        iris = export_sklearn(
            workdir / "iris.joblib",
            name="tabular-iris",
            repository=model_repository,
            sample=iris_x[:20].astype(np.float32),
            session=session,
        )
        diabetes = export_sklearn(
            workdir / "diabetes.joblib",
            name="tabular-diabetes",
            repository=model_repository,
            sample=diabetes_x[:20].astype(np.float32),
            session=session,
        )
    return {
        "classifier": (iris.triton_name, classifier, iris_x.astype(np.float32)),
        "regressor": (diabetes.triton_name, regressor, diabetes_x.astype(np.float32)),
    }


async def _predict(
    client: httpx.AsyncClient, model_id: int, rows: list[list[float]], key: str
) -> httpx.Response:
    """A cold model answers 503 + Retry-After while it loads: retry as a client would."""
    for _ in range(60):
        response = await client.post(
            f"/api/v1/models/{model_id}/predict", json={"data": rows}, headers={"X-API-Key": key}
        )
        if response.status_code != 503:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return response


async def test_classifier_rows_match_sklearn_probabilities(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, tabular_models: dict
) -> None:
    triton_name, classifier, rows = tabular_models["classifier"]
    model_id = await register_model(client, admin_key, triton_name)
    response = await _predict(client, model_id, rows[:7].tolist(), predict_key)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = classifier.predict_proba(rows[:7].astype(np.float64))
    assert np.abs(np.asarray(body["probabilities"]) - expected).max() < 1e-5
    assert [str(label) for label in classifier.predict(rows[:7])] == [
        str(p) for p in body["predictions"]
    ]
    assert body["model_id"] == model_id
    assert response.headers["X-Request-ID"] == body["request_id"]


async def test_regressor_rows_split_beyond_max_batch_size(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, tabular_models: dict
) -> None:
    triton_name, regressor, rows = tabular_models["regressor"]
    model_id = await register_model(client, admin_key, triton_name)
    many = rows[:150]  # more rows than the model's max_batch_size (64)
    response = await _predict(client, model_id, many.tolist(), predict_key)
    assert response.status_code == 200, response.text
    served = np.asarray(response.json()["predictions"])
    expected = regressor.predict(many.astype(np.float64))
    assert served.shape == (150,)
    assert np.abs(served - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


async def test_bad_rows_get_the_error_body(
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    tabular_models: dict,
    model_ids: dict[str, int],
) -> None:
    triton_name, _, _ = tabular_models["classifier"]
    model_id = await register_model(client, admin_key, triton_name)
    headers = {"X-API-Key": predict_key}
    cases = [
        (f"/api/v1/models/{model_id}/predict", {"data": [[1.0, 2.0]]}, 400),
        (f"/api/v1/models/{model_id}/predict", {"data": []}, 422),
        (f"/api/v1/models/{model_id}/predict", {"data": [["a", "b", "c", "d"]]}, 422),
        ("/api/v1/models/999999/predict", {"data": [[1.0, 2.0, 3.0, 4.0]]}, 404),
        # A recommender takes user ids, not feature rows.
        (f"/api/v1/models/{model_ids['a']}/predict", {"data": [[1.0]]}, 400),
    ]
    for path, body, status in cases:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == status, (path, body, response.text)
        error = response.json()
        assert set(error) == {"error", "message", "details", "timestamp", "request_id"}
    unauthenticated = await client.post(
        f"/api/v1/models/{model_id}/predict", json={"data": [[1.0, 2.0, 3.0, 4.0]]}
    )
    assert unauthenticated.status_code == 401
