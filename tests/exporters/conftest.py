"""Fixtures for the exporter tests: source models on disk, one export session per module.

Exports publish into the session's `model_repository`, which the shared `triton`
fixture serves, so each test can also load the published model in a Triton that
did not take part in the export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from tritonclient import grpc as triton_grpc
from tritonclient.utils import np_to_triton_dtype

from conch_embedded.triton_server import EmbeddedTriton
from exporters.session import ExportSession

InferFn = Callable[[str, dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def export_session(model_repository: Path) -> Iterator[ExportSession]:
    """One private parity Triton shared by every export in a test module."""
    with ExportSession(model_repository) as session:
        yield session


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for trained source models (never inside a model repository)."""
    return tmp_path_factory.mktemp("sources")


@pytest.fixture
def served(triton: EmbeddedTriton) -> Iterator[InferFn]:
    """Load a published model in the shared Triton and run one request through it."""
    client = triton_grpc.InferenceServerClient(triton.grpc_url)

    def infer(
        triton_name: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        client.load_model(triton_name)
        request = []
        for name, array in inputs.items():
            tensor = triton_grpc.InferInput(
                name, list(array.shape), np_to_triton_dtype(array.dtype)
            )
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        wanted = [triton_grpc.InferRequestedOutput(name) for name in outputs]
        response = client.infer(triton_name, request, outputs=wanted)
        return {name: response.as_numpy(name) for name in outputs}

    yield infer
    client.close()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file and directory under root with its bytes, for byte-for-byte comparisons."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def repository_snapshot() -> Callable[[Path], dict[str, bytes]]:
    return snapshot
