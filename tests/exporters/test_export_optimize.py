"""`--optimize`: the ONNX graph optimized offline by onnxruntime, parity-checked, published,
recorded in the manifest; refused for TorchScript."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from conch_manifest.layout import load_manifest
from conch_manifest.schema import GraphOptimization
from exporters.cli import app
from exporters.errors import ExportError
from exporters.onnx_exporter import export_onnx
from exporters.onnx_optimize import OPTIMIZED_HINT, OnnxGraphOptimization, optimize_onnx
from exporters.pipeline import Artifact
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from exporters.torch_exporter import export_torch

WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
BIAS = np.full(3, 0.5, dtype=np.float32)


def linear_onnx(path: Path) -> bytes:
    """y = x @ W + b as MatMul, Add and Identity: the basic level makes one Gemm of them."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["linear"]),
            helper.make_node("Identity", ["linear"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path.read_bytes()


def test_the_basic_level_fuses_and_keeps_the_source_opsets(tmp_path: Path) -> None:
    data = linear_onnx(tmp_path / "linear.onnx")
    optimized, before, after = optimize_onnx(data)
    model = onnx.load_model_from_string(optimized)
    assert (before, after) == (3, 1)
    assert [node.op_type for node in model.graph.node] == ["Gemm"]
    # onnxruntime lists every domain it knows; the published file imports only the source's.
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ir_version == 8
    # Deterministic, so the content-addressed name of an optimized export is stable.
    assert optimize_onnx(data)[0] == optimized


def test_an_optimized_onnx_export_is_parity_checked_published_and_recorded(
    tmp_path: Path, model_repository: Path, export_session: ExportSession, served
) -> None:
    source = tmp_path / "linear.onnx"
    linear_onnx(source)
    result = export_onnx(
        source, name="optimized-linear", repository=model_repository, session=export_session,
        transforms=[OnnxGraphOptimization()],
    )  # fmt: skip
    assert [(step.name, step.status) for step in result.steps] == [
        ("convert", "ok"), ("optimize", "ok"), ("write", "ok"), ("parity", "ok"), ("publish", "ok"),
    ]  # fmt: skip
    manifest = load_manifest(model_repository, result.triton_name)
    assert manifest.optimization == GraphOptimization(nodes_before=3, nodes_after=1)
    assert manifest.framework_versions["onnxruntime"] and manifest.parity.passed
    published = onnx.load(result.path / "1" / "model.onnx")
    assert [node.op_type for node in published.graph.node] == ["Gemm"]
    rows = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    got = served(result.triton_name, {"x": rows}, ["y"])["y"]
    np.testing.assert_allclose(got, rows @ WEIGHTS + BIAS, rtol=1e-5, atol=1e-6)

    plain = export_onnx(
        source, name="optimized-linear", repository=model_repository, session=export_session
    )
    assert plain.triton_name != result.triton_name and plain.manifest.optimization is None


def test_a_tabular_export_is_optimized_and_matches_the_estimator(
    sources: Path, model_repository: Path, export_session: ExportSession, served
) -> None:
    x, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    joblib.dump(model, sources / "optimized-iris.joblib")
    rows = x[:40].astype(np.float32)
    result = export_sklearn(
        sources / "optimized-iris.joblib", name="optimized-iris", repository=model_repository,
        sample=rows, session=export_session, transforms=[OnnxGraphOptimization()],
    )  # fmt: skip
    assert result.manifest.optimization is not None and result.manifest.parity.passed
    got = served(result.triton_name, {"input": rows[:6]}, ["probabilities"])["probabilities"]
    np.testing.assert_allclose(got, model.predict_proba(rows[:6]), atol=1e-5)


@dataclass
class OptimizeThenPerturb:
    """The real optimization, then the bias moved by 0.01: stands for an optimization that
    changed the results, which onnxruntime's basic level cannot be made to do on demand."""

    name: str = "optimize"

    def apply(self, artifact: Artifact) -> Artifact:
        optimized = OnnxGraphOptimization().apply(artifact)
        model = onnx.load_model_from_string(optimized.model_bytes)
        bias = next(t for t in model.graph.initializer if t.name == "b")
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.01, "b"))
        return replace(optimized, model_bytes=model.SerializeToString())


def test_a_parity_failure_after_optimizing_publishes_nothing(
    tmp_path: Path, model_repository: Path, export_session: ExportSession
) -> None:
    source = tmp_path / "linear.onnx"
    linear_onnx(source)
    with pytest.raises(ExportError, match="parity check failed") as failed:
        export_onnx(
            source, name="perturbed-linear", repository=model_repository,
            session=export_session, transforms=[OptimizeThenPerturb()],
        )  # fmt: skip
    assert OPTIMIZED_HINT in str(failed.value)
    assert [step.status for step in failed.value.steps] == ["ok", "ok", "ok", "failed", "skipped"]
    assert not list(model_repository.glob("perturbed-linear*"))
    assert not list(export_session.staging.root.glob("perturbed-linear*"))


class Mlp(torch.nn.Module):
    """torch.onnx exports its batch norm's statistics through Identity nodes: the basic level
    removes them."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(6, 32),
            torch.nn.BatchNorm1d(32),
            torch.nn.ReLU(),
            torch.nn.Linear(32, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_torchscript_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(Mlp().eval()), str(tmp_path / "mlp.pt"))
    with pytest.raises(ExportError, match="applies to ONNX models") as refused:
        export_torch(
            tmp_path / "mlp.pt", name="mlp", repository=tmp_path / "repository",
            input_shape=(6,), format="torchscript", transforms=[OnnxGraphOptimization()],
        )  # fmt: skip
    assert [(s.name, s.status) for s in refused.value.steps[:2]] == [
        ("convert", "ok"),
        ("optimize", "failed"),
    ]
    assert not (tmp_path / "repository").exists()


def test_cli_optimize_for_torch_onnx_and_its_refusal_for_torchscript(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Mlp().eval()), str(tmp_path / "mlp.pt"))
    args = ["torch", str(tmp_path / "mlp.pt"), "--name", "mlp", "--input-shape", "6"]
    args += ["--repository", str(tmp_path / "repository"), "--optimize"]
    refused = CliRunner().invoke(app, [*args, "--format", "torchscript"])
    assert refused.exit_code == 2, refused.output
    assert "--optimize applies to --format onnx" in refused.output

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "optimized: onnxruntime basic level, 6 -> 4 graph nodes" in result.output
    (entry,) = (tmp_path / "repository").glob("mlp-*")
    manifest = load_manifest(tmp_path / "repository", entry.name)
    assert manifest.optimization == GraphOptimization(nodes_before=6, nodes_after=4)
    assert manifest.backend == "onnxruntime" and manifest.parity.passed
