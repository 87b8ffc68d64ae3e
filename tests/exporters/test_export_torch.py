"""PyTorch exports: ONNX through onnxruntime, TorchScript through the pytorch backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conch_manifest.layout import verify_files
from exporters.errors import ExportError
from exporters.pipeline import ServingOptions
from exporters.session import ExportSession
from exporters.torch_exporter import export_torch


class TwoHeads(torch.nn.Module):
    """Two outputs, to check they fill the config's outputs in order."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU())
        self.logits = torch.nn.Linear(64, 3)
        self.embedding = torch.nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(x)
        return self.logits(hidden), self.embedding(hidden)


@pytest.fixture(scope="module")
def scripted(sources: Path) -> Path:
    torch.manual_seed(0)
    path = sources / "two_heads.pt"
    torch.jit.save(torch.jit.script(TwoHeads().eval()), str(path))
    return path


def _reference(path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = torch.jit.load(str(path))
    with torch.inference_mode():
        logits, embedding = model(torch.from_numpy(rows))
    return logits.numpy(), embedding.numpy()


def test_onnx_export_with_dynamic_batch(
    scripted: Path, model_repository: Path, export_session: ExportSession, served
) -> None:
    result = export_torch(
        scripted, name="two-heads", repository=model_repository, input_shape=(16,),
        session=export_session,
    )  # fmt: skip
    assert result.manifest.backend == "onnxruntime" and result.manifest.parity.passed
    assert [o.name for o in result.manifest.outputs] == ["OUTPUT__0", "OUTPUT__1"]
    rows = np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32)
    got = served(result.triton_name, {"INPUT__0": rows}, ["OUTPUT__0", "OUTPUT__1"])
    logits, embedding = _reference(scripted, rows)
    np.testing.assert_allclose(got["OUTPUT__0"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["OUTPUT__1"], embedding, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchscript_through_the_pytorch_backend(
    scripted: Path, model_repository: Path, export_session: ExportSession
) -> None:
    # The parity check already ran every sample row through the pytorch backend;
    # max_abs_diff 0 shows the TorchScript ran unchanged.
    sample = np.random.default_rng(2).standard_normal((40, 16)).astype(np.float32)
    result = export_torch(
        scripted, name="two-heads-ts", repository=model_repository, sample=sample,
        format="torchscript", session=export_session,
    )  # fmt: skip
    manifest = result.manifest
    assert manifest.backend == "pytorch" and manifest.format == "torchscript"
    assert manifest.parity.passed and manifest.parity.max_abs_diff == 0.0
    assert verify_files(model_repository, manifest) == []
    assert "1/model.pt" in manifest.files
    assert 'backend: "pytorch"' in (result.path / "config.pbtxt").read_text()


def test_pickled_module_is_traced(
    sources: Path, model_repository: Path, export_session: ExportSession
) -> None:
    torch.manual_seed(3)
    path = sources / "pickled.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh()), str(path))
    result = export_torch(
        path, name="pickled", repository=model_repository, input_shape=(8,),
        session=export_session,
    )  # fmt: skip
    assert result.manifest.parity.passed


def test_wrong_input_shape_is_refused(scripted: Path, model_repository: Path) -> None:
    with pytest.raises(ExportError, match=r"rejected input of shape \(64, 5\)"):
        export_torch(scripted, name="bad-shape", repository=model_repository, input_shape=(5,))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_gpu_instances_without_cuda_are_refused_clearly(
    scripted: Path, tmp_path: Path, repository_snapshot
) -> None:
    before = repository_snapshot(tmp_path)
    # Triton itself refuses GPU instance groups on a machine without GPUs.
    with pytest.raises(ExportError, match="KIND_GPU but no GPUs are available"):
        export_torch(
            scripted, name="gpu-ts", repository=tmp_path, input_shape=(16,),
            format="torchscript", options=ServingOptions(instance_kind="gpu"),
        )  # fmt: skip
    assert repository_snapshot(tmp_path) == before


@pytest.mark.gpu
def test_torchscript_on_kind_gpu(scripted: Path, tmp_path: Path) -> None:
    result = export_torch(
        scripted, name="gpu-ts", repository=tmp_path, input_shape=(16,), format="torchscript",
        options=ServingOptions(instance_kind="gpu"),
    )  # fmt: skip
    assert result.manifest.parity.passed, result.manifest.parity.detail
    config = (result.path / "config.pbtxt").read_text()
    assert "KIND_GPU" in config


def test_labels_make_a_classifier_of_the_first_output(
    scripted: Path, model_repository: Path, export_session: ExportSession
) -> None:
    result = export_torch(
        scripted, name="two-heads-labelled", repository=model_repository, input_shape=(16,),
        labels=[10, 20, 30], session=export_session,
    )  # fmt: skip
    manifest = result.manifest
    assert manifest.task == "classification" and manifest.parity.passed
    first, second = manifest.outputs
    assert (first.class_labels, first.class_label_type) == (["10", "20", "30"], "int")
    assert first.typed_class_labels() == [10, 20, 30] and second.class_labels is None


def test_a_label_count_other_than_the_output_width_is_refused(
    scripted: Path, model_repository: Path
) -> None:
    with pytest.raises(ExportError, match=r"2 class labels, but OUTPUT__0 has 3 columns"):
        export_torch(
            scripted, name="two-heads-wrong", repository=model_repository, input_shape=(16,),
            labels=["cat", "dog"],
        )  # fmt: skip
    with pytest.raises(ExportError, match="not a regression model"):
        export_torch(
            scripted, name="two-heads-wrong", repository=model_repository, input_shape=(16,),
            labels=["cat", "dog", "bird"], task="regression",
        )  # fmt: skip
    assert not list(model_repository.glob("two-heads-wrong*"))


def test_cli_labels_are_typed_and_a_wrong_count_is_a_clear_error(
    scripted: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from exporters.cli import app, parse_labels

    assert parse_labels("0,1,2") == [0, 1, 2]
    assert parse_labels("0.5, 1.5") == [0.5, 1.5]
    assert parse_labels("true,False") == [True, False]
    assert parse_labels("cat,dog,nan") == ["cat", "dog", "nan"]
    args = ["torch", str(scripted), "--name", "heads", "--input-shape", "16"]
    result = CliRunner().invoke(app, [*args, "--repository", str(tmp_path), "--labels", "cat,dog"])
    assert result.exit_code == 1
    assert "2 class labels, but OUTPUT__0 has 3 columns" in result.output
