"""BYTES (TYPE_STRING) tensors through Conch's Python-based onnxruntime and pytorch backends.

Each model takes a string input beside an FP32 one and returns a string output
beside an FP32 one, so a dynamic batch has to concatenate, convert and split
both kinds. Requests are sent concurrently with a long queue delay so Triton
merges them; its statistics prove it did.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from tritonclient import grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVEL_COUNT
from exporters.arrays import Array
from exporters.config import ModelConfigSpec, TensorConfig, render_config

# Long enough that concurrent requests land in one batch, short enough for a test.
QUEUE_DELAY_US = 300_000
INPUTS = (TensorConfig("TEXT", "BYTES", (1,)), TensorConfig("X", "FP32", (2,)))
OUTPUTS = (TensorConfig("ECHO", "BYTES", (1,)), TensorConfig("Y", "FP32", (2,)))


class Suffixed(torch.nn.Module):
    def forward(self, texts: list[str], x: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        return [text + "!" for text in texts], x * 2


def _onnx_echo() -> bytes:
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["TEXT"], ["ECHO"]),
            helper.make_node("Add", ["X", "X"], ["Y"]),
        ],
        "echo",
        [
            helper.make_tensor_value_info("TEXT", TensorProto.STRING, [None, 1]),
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2]),
        ],
        [
            helper.make_tensor_value_info("ECHO", TensorProto.STRING, [None, 1]),
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _torchscript(path: Path) -> bytes:
    torch.jit.save(torch.jit.script(Suffixed()), str(path))
    return path.read_bytes()


def _publish(repository: Path, name: str, backend: Any, filename: str, data: bytes) -> None:
    spec = ModelConfigSpec(
        name=name,
        backend=backend,
        inputs=INPUTS,
        outputs=OUTPUTS,
        max_batch_size=16,
        default_model_filename=filename,
        max_queue_delay_us=QUEUE_DELAY_US,
        priority_levels=True,
    )
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "1" / filename).write_bytes(data)
    (repository / name / "config.pbtxt").write_text(render_config(spec))


@pytest.fixture(scope="module")
def string_models(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """backend -> name of its string model, published in the shared repository."""
    scratch = tmp_path_factory.mktemp("string-models")
    _publish(model_repository, "strings-onnx", "onnxruntime", "model.onnx", _onnx_echo())
    torchscript = _torchscript(scratch / "model.pt")
    _publish(model_repository, "strings-torch", "pytorch", "model.pt", torchscript)
    return {"onnxruntime": "strings-onnx", "pytorch": "strings-torch"}


@pytest.fixture
def client(triton: EmbeddedTriton) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(triton.grpc_url) as connected:
        yield connected


# What each backend's model does to a text (Identity; TorchScript appends "!").
EXPECTED = {"onnxruntime": lambda text: text, "pytorch": lambda text: text + "!"}


def _request(
    client: triton_grpc.InferenceServerClient, name: str, texts: list[bytes], seed: int
) -> tuple[Array, Array, Array]:
    text = np.array(texts, dtype=np.object_).reshape(-1, 1)
    x = np.full((len(texts), 2), seed, dtype=np.float32)
    inputs = [
        triton_grpc.InferInput("TEXT", list(text.shape), "BYTES"),
        triton_grpc.InferInput("X", list(x.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(text)
    inputs[1].set_data_from_numpy(x)
    outputs = [triton_grpc.InferRequestedOutput("ECHO"), triton_grpc.InferRequestedOutput("Y")]
    response = client.infer(name, inputs, outputs=outputs)
    return x, response.as_numpy("ECHO"), response.as_numpy("Y")


def _executions(client: triton_grpc.InferenceServerClient, name: str) -> tuple[int, int]:
    [stats] = client.get_inference_statistics(name).model_stats
    return stats.inference_count, stats.execution_count


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_string_tensors_are_batched_converted_and_split(
    backend: str, string_models: dict[str, str], client: triton_grpc.InferenceServerClient
) -> None:
    name = string_models[backend]
    client.load_model(name)
    before = _executions(client, name)
    # Requests of different sizes and scripts; each must get back its own rows.
    requests = [
        [f"request {i} row {j} · naïve café {'é' * i}".encode() for j in range(1 + i % 3)]
        for i in range(8)
    ]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [
            pool.submit(_request, client, name, texts, seed) for seed, texts in enumerate(requests)
        ]
        results = [future.result() for future in futures]

    for texts, (x, echo, y) in zip(requests, results, strict=True):
        assert echo.shape == (len(texts), 1) and echo.dtype == np.object_
        expected = [EXPECTED[backend](text.decode()).encode() for text in texts]
        assert echo.ravel().tolist() == expected
        np.testing.assert_array_equal(y, x * 2)
    inferences, executions = (a - b for a, b in zip(_executions(client, name), before, strict=True))
    assert inferences == sum(len(texts) for texts in requests)
    assert executions < len(requests), "Triton never merged the requests into one batch"


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_text_that_is_not_utf8_fails_only_its_own_request(
    backend: str, string_models: dict[str, str], client: triton_grpc.InferenceServerClient
) -> None:
    name = string_models[backend]
    client.load_model(name)
    requests = [[b"fine"], [b"\xff\xfe not utf-8"], [b"also fine", b"two rows"]]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(_request, client, name, texts, 1) for texts in requests]
        with pytest.raises(InferenceServerException, match="not valid UTF-8"):
            futures[1].result()
        good = [futures[0].result(), futures[2].result()]
    assert [echo.ravel().tolist() for _, echo, _ in good] == [
        [EXPECTED[backend]("fine").encode()],
        [EXPECTED[backend](t).encode() for t in ("also fine", "two rows")],
    ]


def test_a_request_may_name_any_of_the_declared_priority_levels(
    string_models: dict[str, str], client: triton_grpc.InferenceServerClient
) -> None:
    """Asked for them, render_config declares PRIORITY_LEVEL_COUNT levels; Triton serves each."""
    name = string_models["onnxruntime"]
    client.load_model(name)
    text = np.array([[b"urgent"]], dtype=np.object_)
    x = np.zeros((1, 2), dtype=np.float32)
    inputs = [
        triton_grpc.InferInput("TEXT", [1, 1], "BYTES"),
        triton_grpc.InferInput("X", [1, 2], "FP32"),
    ]
    inputs[0].set_data_from_numpy(text)
    inputs[1].set_data_from_numpy(x)
    config = client.get_model_config(name).config.dynamic_batching
    assert (config.priority_levels, config.default_priority_level) == (
        PRIORITY_LEVEL_COUNT,
        DEFAULT_PRIORITY_LEVEL,
    )
    for level in range(1, PRIORITY_LEVEL_COUNT + 1):
        response = client.infer(name, inputs, priority=level)
        assert response.as_numpy("ECHO").ravel().tolist() == [b"urgent"]
