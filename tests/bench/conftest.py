"""Bench fixtures: small models exported into the session's repository and loaded,
and a real control plane per module for the passes that need one (async, stream,
instrumentation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from conch_bench import suite
from conch_bench.conch_arm import ConchEndpoint, conch_stack
from conch_bench.models import BenchModel, add_nobatch_variant, export_tabular
from conch_bench.suite import SuiteOptions
from conch_embedded.triton_server import EmbeddedTriton
from control_plane.cli import with_commands
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn

FEATURES = 4  # the registrable model's


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


@pytest.fixture(scope="module")
def registrable(
    request: pytest.FixtureRequest,
    model_repository: Path,
    triton: EmbeddedTriton,
    tmp_path_factory: pytest.TempPathFactory,
) -> BenchModel:
    """A logistic regression over `FEATURES` floats exported with its manifest (Conch
    registers only those), named after the module, and loaded."""
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_bench_")
    x = np.random.default_rng(0).standard_normal((64, FEATURES)).astype(np.float32)
    path = tmp_path_factory.mktemp(module) / "model.joblib"
    joblib.dump(LogisticRegression().fit(x, x[:, 0] > 0), path)
    with ExportSession(model_repository) as session:
        exported = export_sklearn(
            path, name=f"bench-{module}", repository=model_repository, sample=x[:8], session=session
        )
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        client.load_model(exported.triton_name)
    finally:
        client.close()
    return BenchModel("tabular", exported.triton_name, None, '{"data": $DATA}', FEATURES)


@pytest.fixture(scope="module")
def conch(
    triton: EmbeddedTriton, model_repository: Path, registrable: BenchModel
) -> Iterator[ConchEndpoint]:
    """A control plane (with its database and Redis) serving `registrable`."""
    with conch_stack(triton, model_repository, [registrable]) as endpoint:
        yield endpoint


def options_from_cli(flags: list[str], monkeypatch: pytest.MonkeyPatch) -> SuiteOptions:
    """The options `conch bench suite --quick <flags>` hands the suite (which does not run)."""
    seen: list[SuiteOptions] = []

    def run_suite(options: SuiteOptions, _: Console) -> SimpleNamespace:
        seen.append(options)
        return SimpleNamespace(failures=[])  # a run whose checks all passed

    monkeypatch.setattr(suite, "run_suite", run_suite)
    result = CliRunner().invoke(with_commands("bench"), ["bench", "suite", "--quick", *flags])
    assert result.exit_code == 0, result.output
    (options,) = seen
    return options
