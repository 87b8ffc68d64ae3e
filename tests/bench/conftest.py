"""Bench fixtures: small models exported into the session's repository and loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from conch_bench.models import BenchModel, add_nobatch_variant, export_tabular
from conch_embedded.triton_server import EmbeddedTriton


@pytest.fixture(scope="session")
def bench_tabular(model_repository: Path, triton: EmbeddedTriton) -> BenchModel:
    """The stand-in tabular classifier (and its no-batching twin), loaded in Triton."""
    model = export_tabular(model_repository, name="bench_test_tabular")
    nobatch = add_nobatch_variant(model_repository, model.triton_name)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        client.load_model(model.triton_name)
        client.load_model(nobatch)
    finally:
        client.close()
    return model
