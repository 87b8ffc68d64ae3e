"""A small scikit-learn regressor exported into the session's model repository, and
predictions through the feature-row door (which counts them in `InferenceStats`)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import joblib
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn

ROW = [[0.01 * i for i in range(10)]]  # one row of the diabetes data's 10 features


def export_regressor(repository: Path, workdir: Path) -> str:
    """The Triton name of a freshly exported Ridge regressor."""
    rows, targets = load_diabetes(return_X_y=True)
    path = workdir / "ridge.joblib"
    joblib.dump(Ridge().fit(rows, targets), path)
    with ExportSession(repository) as session:
        exported = export_sklearn(
            path,
            name=f"mgmt-ridge-{uuid.uuid4().hex[:6]}",
            repository=repository,
            sample=rows[:20].astype(np.float32),
            session=session,
        )
    return exported.triton_name


async def predict_rows(client: httpx.AsyncClient, model_id: int, key: str) -> httpx.Response:
    """One prediction; a cold model's 503 + Retry-After is retried as a client would,
    any other answer returned."""
    for _ in range(120):
        response = await client.post(
            f"/api/v1/models/{model_id}/predict", json={"data": ROW}, headers={"X-API-Key": key}
        )
        if response.status_code != 503 or response.json()["error"] != "ModelLoadingError":
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return response
