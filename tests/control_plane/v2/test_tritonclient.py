"""tritonclient.http against Conch gives what it gives against Triton itself."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as httpclient
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

from conch_embedded.triton_server import EmbeddedTriton
from tests.control_plane.conftest import make_key
from tests.control_plane.v2.conftest import Tabular
from tests.control_plane.waiting import until


def _infer(
    url: str,
    model: str,
    rows: npt.NDArray[np.float32],
    headers: dict[str, str] | None = None,
    *,
    binary: bool,
    class_count: int = 0,
) -> tuple[npt.NDArray[Any], dict[str, Any]]:
    # A client per call, in the calling thread: geventhttpclient's sockets belong to it.
    client = httpclient.InferenceServerClient(url)
    try:
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        output = httpclient.InferRequestedOutput(
            "probabilities", binary_data=binary, class_count=class_count
        )
        # A copy: tritonclient writes Inference-Header-Content-Length into the dict.
        result = client.infer(model, [tensor], outputs=[output], headers=dict(headers or {}))
        return result.as_numpy("probabilities"), result.get_response()
    finally:
        client.close()


def _describe(url: str, model: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(url)
    try:
        return {
            "live": client.is_server_live(headers=headers),
            "ready": client.is_server_ready(headers=headers),
            "model_ready": client.is_model_ready(model, headers=headers),
            "metadata": client.get_model_metadata(model, headers=headers),
            "version_metadata": client.get_model_metadata(model, "1", headers=headers),
            "config": client.get_model_config(model, headers=headers),
            "server": client.get_server_metadata(headers=headers),
        }
    finally:
        client.close()


@pytest.fixture(scope="module")
async def read_predict_key(app: FastAPI) -> str:
    return await make_key(app, ["read", "predict"], name="v2")


@pytest.fixture(scope="module")
async def loaded_iris(client: httpx.AsyncClient, iris: Tabular, read_predict_key: str) -> Tabular:
    """Readiness loads the model through the lifecycle (503 while it loads)."""

    async def ready() -> bool:
        response = await client.get(
            f"/v2/models/{iris.model_id}/ready", headers={"X-API-Key": read_predict_key}
        )
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200

    await until(ready, "the model did not load")
    return iris


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_inference_matches_triton_direct_by_every_name(
    conch_address: str,
    triton: EmbeddedTriton,
    loaded_iris: Tabular,
    read_predict_key: str,
    binary: bool,
) -> None:
    rows = loaded_iris.rows
    direct, direct_body = await asyncio.to_thread(
        _infer, triton.http_url, loaded_iris.triton_name, rows, binary=binary
    )
    assert direct.shape == (5, 3)
    headers = {"X-API-Key": read_predict_key}
    for ref in (loaded_iris.triton_name, loaded_iris.name, str(loaded_iris.model_id)):
        served, body = await asyncio.to_thread(
            _infer, conch_address, ref, rows, headers, binary=binary
        )
        np.testing.assert_array_equal(served, direct)
        # Triton's answer, unchanged: the Triton name, whichever name was asked for.
        assert body == direct_body
        assert body["model_name"] == loaded_iris.triton_name


async def test_classification_extension_matches_triton_direct(
    conch_address: str, triton: EmbeddedTriton, loaded_iris: Tabular, read_predict_key: str
) -> None:
    headers = {"Authorization": f"Bearer {read_predict_key}"}  # the other way to present a key
    for binary in (True, False):
        direct, _ = await asyncio.to_thread(
            _infer, triton.http_url, loaded_iris.triton_name, loaded_iris.rows,
            binary=binary, class_count=2,
        )  # fmt: skip
        served, _ = await asyncio.to_thread(
            _infer, conch_address, loaded_iris.name, loaded_iris.rows, headers,
            binary=binary, class_count=2,
        )  # fmt: skip
        assert served.shape == (5, 2)
        assert served.tolist() == direct.tolist()
        top = served[0, 0]  # "<score>:<class index>", the top first (bytes when binary)
        assert (top.decode() if isinstance(top, bytes) else top).endswith(":0")


async def test_metadata_readiness_and_config_match_triton_direct(
    conch_address: str, triton: EmbeddedTriton, loaded_iris: Tabular, read_predict_key: str
) -> None:
    headers = {"X-API-Key": read_predict_key}
    served = await asyncio.to_thread(_describe, conch_address, loaded_iris.name, headers)
    direct = await asyncio.to_thread(_describe, triton.http_url, loaded_iris.triton_name)
    assert served["live"] and served["ready"] and served["model_ready"]
    for part in ("metadata", "version_metadata", "config"):
        assert served[part] == direct[part], part
    assert served["metadata"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    server = served["server"]
    assert server["name"] == "conch"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    # Conch's door does not offer Triton's repository or shared-memory extensions.
    assert not {"model_repository", "system_shared_memory"} & set(server["extensions"])


async def test_errors_reach_tritonclient_with_their_status(
    conch_address: str, loaded_iris: Tabular, app: FastAPI
) -> None:
    cases = [
        ({}, "401"),
        ({"X-API-Key": await make_key(app, ["read"], name="v2-read")}, "403"),
    ]
    for headers, status in cases:
        with pytest.raises(InferenceServerException) as raised:
            await asyncio.to_thread(
                _infer, conch_address, loaded_iris.name, loaded_iris.rows, headers, binary=True
            )
        assert raised.value.status() == status
    with pytest.raises(InferenceServerException) as unknown:
        key = {"X-API-Key": await make_key(app, ["predict"], name="v2-predict")}
        await asyncio.to_thread(
            _infer, conch_address, "no-such-model", loaded_iris.rows, key, binary=True
        )
    assert unknown.value.status() == "404"
