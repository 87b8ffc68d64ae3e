"""The v2 door served on a real port, for `tritonclient.http` (which speaks plain HTTP).

uvicorn serves the session's app in the test loop (its lifespan already ran);
tritonclient's calls run in a worker thread so that the loop keeps serving.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from tests.control_plane.conftest import register_model
from tests.control_plane.served import served


@dataclass(frozen=True)
class Tabular:
    model_id: int
    name: str  # registered name
    triton_name: str
    rows: npt.NDArray[np.float32]


def export_iris(model_repository: Path, workdir: Path, name: str) -> str:
    """An iris classifier exported for Triton (FP32 [-1, 4] -> probabilities [-1, 3])."""
    features, labels = load_iris(return_X_y=True)
    classifier = LogisticRegression(max_iter=500).fit(features, labels)
    joblib.dump(classifier, workdir / f"{name}.joblib")
    with ExportSession(model_repository) as session:
        exported = export_sklearn(
            workdir / f"{name}.joblib",
            name=name,
            repository=model_repository,
            sample=features[:20].astype(np.float32),
            session=session,
        )
    return exported.triton_name


@pytest.fixture(scope="module")
async def iris(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Tabular:
    name = f"v2-iris-{uuid.uuid4().hex[:6]}"
    triton_name = export_iris(model_repository, tmp_path_factory.mktemp("v2"), name)
    model_id = await register_model(client, admin_key, triton_name)
    rows = load_iris(return_X_y=True)[0][:5].astype(np.float32)
    return Tabular(model_id, name, triton_name, rows)


@pytest.fixture(scope="module")
async def conch_address(app: FastAPI) -> AsyncIterator[str]:
    """host:port of the session's app, served by uvicorn in this loop."""
    async with served(app) as url:
        yield url.removeprefix("http://")
