"""Predictions reach Triton over HTTP (binary tensors) or gRPC with the same answers."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from conch_embedded.process import free_port
from conch_embedded.triton_server import EmbeddedTriton
from control_plane.core.errors import TritonError, TritonUnavailableError
from control_plane.triton.client import TritonGateway
from tests.control_plane.recommender_model import write_recommender

INPUT, ITEMS, SCORES = "USER_INDEX", "ITEM_INDEX", "SCORE"  # recommender_model.py


@pytest.fixture
async def gateways(
    triton: EmbeddedTriton, recommenders: dict[str, str]
) -> AsyncIterator[dict[str, TritonGateway]]:
    over_http = TritonGateway(
        triton.grpc_url, timeout_s=10, load_timeout_s=60, http_url=triton.http_url
    )
    over_grpc = TritonGateway(triton.grpc_url, timeout_s=10, load_timeout_s=60)
    # A gateway alone never loads: it infers on what Triton has loaded.
    await over_grpc.load(recommenders["a"])
    yield {"http": over_http, "grpc": over_grpc}
    for gateway in (over_http, over_grpc):
        await gateway.close()


async def test_http_and_grpc_give_the_same_outputs(
    gateways: dict[str, TritonGateway], recommenders: dict[str, str]
) -> None:
    rows = np.asarray([[0], [3], [5]], dtype=np.int64)
    answers = {
        protocol: await gateway.infer(recommenders["a"], {INPUT: rows}, [ITEMS, SCORES])
        for protocol, gateway in gateways.items()
    }
    for name in (ITEMS, SCORES):
        assert answers["http"][name].shape[0] == 3
        np.testing.assert_array_equal(answers["http"][name], answers["grpc"][name])
    # The keep-alive connection went back to the pool and serves the next call.
    await gateways["http"].infer(recommenders["a"], {INPUT: rows[:1]}, [ITEMS])
    assert gateways["http"]._http is not None and len(gateways["http"]._http._idle) == 1


async def test_triton_refusing_a_request_over_http_is_its_reason(
    gateways: dict[str, TritonGateway], recommenders: dict[str, str]
) -> None:
    wrong_dtype = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(TritonError) as refused:
        await gateways["http"].infer(recommenders["a"], {INPUT: wrong_dtype}, [ITEMS])
    assert refused.value.status_code == 502
    assert "FP32" in refused.value.message or "INT64" in refused.value.message


async def test_a_gateway_without_loader_reports_tritons_error_for_a_model_not_loaded(
    gateways: dict[str, TritonGateway], model_repository: Path
) -> None:
    name = f"cptest_gw_{uuid.uuid4().hex[:8]}"  # in the repository, registered nowhere
    write_recommender(model_repository, name, seed=61)
    rows = np.zeros((1, 1), dtype=np.int64)
    try:
        for gateway in gateways.values():
            with pytest.raises(TritonError) as refused:
                await gateway.infer(name, {INPUT: rows}, [ITEMS])
            assert refused.value.status_code == 502
            assert name in refused.value.message, refused.value.message
        assert name not in await gateways["grpc"].ready_models()  # nothing loaded it
    finally:
        shutil.rmtree(model_repository / name)


async def test_unreachable_http_endpoint_is_503(
    triton: EmbeddedTriton, recommenders: dict[str, str]
) -> None:
    gateway = TritonGateway(
        triton.grpc_url, timeout_s=5, load_timeout_s=60, http_url=f"127.0.0.1:{free_port()}"
    )
    try:
        with pytest.raises(TritonUnavailableError):
            rows = np.zeros((1, 1), dtype=np.int64)
            await gateway.infer(recommenders["a"], {INPUT: rows}, [ITEMS])
    finally:
        await gateway.close()
