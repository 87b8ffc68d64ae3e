"""A text model (BYTES input) through Conch's doors gives what Triton itself gives.

The tabular case is in test_tritonclient.py; here a scikit-learn TF-IDF +
logistic regression pipeline, exported the way users export one
(`exporters.sklearn_exporter.export_sklearn`), is asked the same texts three
ways: Triton direct, Conch's `/v2/` door (tritonclient, binary and JSON
tensors) and seed 002's `POST /api/inference/predict`. Its tickets are the
demo's generated support tickets, so there are four classes that overlap,
and the texts asked include accents and punctuation that tokenization must
treat the same everywhere.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as httpclient
from fastapi import FastAPI
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from conch_embedded.demo.text_data import generate_tickets
from conch_embedded.triton_server import EmbeddedTriton
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from exporters.text import text_tensor
from tests.control_plane.conftest import make_key, register_model
from tests.control_plane.waiting import until

# Held-out tickets (another seed than training) and texts that differ in case,
# accents and punctuation: the ONNX tokenizer must see the words sklearn sees.
ASKED = [
    *generate_tickets(6, seed=97).texts,
    "MY INVOICE WAS CHARGED TWICE!!!",
    "Le colis (package) a été delivered... ou pas?",
    "password reset; account locked, café closed",
]


@dataclass(frozen=True)
class TextModel:
    model_id: int
    name: str  # registered name
    triton_name: str
    pipeline: Pipeline  # the fitted scikit-learn original


def export_tickets(model_repository: Path, workdir: Path, name: str) -> tuple[str, Pipeline]:
    """The demo's ticket classifier exported for Triton (BYTES [-1, 1] -> probabilities)."""
    tickets = generate_tickets(240, seed=11)
    pipeline = Pipeline(
        [("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=500))]
    ).fit(tickets.texts, tickets.topics)
    joblib.dump(pipeline, workdir / f"{name}.joblib")
    with ExportSession(model_repository) as session:
        exported = export_sklearn(
            workdir / f"{name}.joblib",
            name=name,
            repository=model_repository,
            sample=tickets.texts[:30] + ASKED,
            session=session,
        )
    return exported.triton_name, pipeline


@pytest.fixture(scope="module")
async def read_predict_key(app: FastAPI) -> str:
    return await make_key(app, ["read", "predict"], name="v2-text")


@pytest.fixture(scope="module")
async def tickets_model(
    client: httpx.AsyncClient,
    admin_key: str,
    read_predict_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> TextModel:
    """Exported, registered and loaded (readiness loads it: 503 while it loads)."""
    name = f"v2-tickets-{uuid.uuid4().hex[:6]}"
    triton_name, pipeline = export_tickets(
        model_repository, tmp_path_factory.mktemp("v2-text"), name
    )
    model_id = await register_model(client, admin_key, triton_name)

    async def ready() -> bool:
        response = await client.get(
            f"/v2/models/{model_id}/ready", headers={"X-API-Key": read_predict_key}
        )
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200

    await until(ready, "the text model did not load")
    return TextModel(model_id, name, triton_name, pipeline)


def _infer_texts(
    url: str,
    model: str,
    texts: list[str],
    headers: dict[str, str] | None = None,
    *,
    binary: bool,
) -> tuple[npt.NDArray[Any], dict[str, Any]]:
    """`probabilities` for `texts` sent as a BYTES [n, 1] tensor, and the response body."""
    # A client per call, in the calling thread: geventhttpclient's sockets belong to it.
    client = httpclient.InferenceServerClient(url)
    try:
        tensor = httpclient.InferInput("input", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(text_tensor(texts), binary_data=binary)
        output = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        # A copy: tritonclient writes Inference-Header-Content-Length into the dict.
        result = client.infer(model, [tensor], outputs=[output], headers=dict(headers or {}))
        return result.as_numpy("probabilities"), result.get_response()
    finally:
        client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_text_inference_matches_triton_direct(
    conch_address: str,
    triton: EmbeddedTriton,
    tickets_model: TextModel,
    read_predict_key: str,
    binary: bool,
) -> None:
    direct, direct_body = await asyncio.to_thread(
        _infer_texts, triton.http_url, tickets_model.triton_name, ASKED, binary=binary
    )
    assert direct.shape == (len(ASKED), 4)
    # The export is faithful, so Triton's answer is worth comparing against.
    np.testing.assert_allclose(direct, tickets_model.pipeline.predict_proba(ASKED), atol=1e-5)
    headers = {"X-API-Key": read_predict_key}
    for ref in (tickets_model.name, str(tickets_model.model_id)):
        served, body = await asyncio.to_thread(
            _infer_texts, conch_address, ref, ASKED, headers, binary=binary
        )
        np.testing.assert_array_equal(served, direct)
        assert body == direct_body  # Triton's answer, unchanged (its own model name)


async def test_seed_002_predict_gives_the_same_labels(
    client: httpx.AsyncClient,
    triton: EmbeddedTriton,
    tickets_model: TextModel,
    read_predict_key: str,
) -> None:
    direct, _ = await asyncio.to_thread(
        _infer_texts, triton.http_url, tickets_model.triton_name, ASKED, binary=True
    )
    classes = tickets_model.pipeline.classes_.tolist()
    expected = [classes[i] for i in direct.argmax(axis=1)]
    assert len(set(expected)) > 1  # the texts ask for several topics, not one answer for all
    response = await client.post(
        "/api/inference/predict",
        json={"model_id": tickets_model.model_id, "data": ASKED, "return_probabilities": True},
        headers={"X-API-Key": read_predict_key},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == expected
    assert body["predictions"] == tickets_model.pipeline.predict(ASKED).tolist()
    np.testing.assert_allclose(np.asarray(body["probabilities"]), direct, rtol=1e-6)
    assert body["resolved_model_id"] == tickets_model.model_id
