"""The step report: every planned step named, with its status and duration, in order."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from conch_embedded.process import free_port
from control_plane.cli import with_commands
from exporters.arrays import Array
from exporters.cli import app, next_command
from exporters.errors import ExportError
from exporters.lightgbm_exporter import export_lightgbm
from exporters.pipeline import Artifact
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from exporters.steps import StepRecord

Snapshot = Callable[[Path], dict[str, bytes]]


@pytest.fixture(scope="module")
def iris(sources: Path) -> tuple[Path, Array]:
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), sources / "steps-iris.joblib")
    return sources / "steps-iris.joblib", x[:30].astype(np.float32)


def _statuses(steps: tuple[StepRecord, ...]) -> list[tuple[str, str]]:
    return [(step.name, step.status) for step in steps]


@dataclass
class Retitle:
    """A transform that visibly changes the artifact: the manifest shows it was used."""

    name: str = "retitle"
    applied: int = 0

    def apply(self, artifact: Artifact) -> Artifact:
        self.applied += 1
        return replace(artifact, framework_versions={**artifact.framework_versions, "t": "1"})


@dataclass
class Refuse:
    name: str = "quantize"

    def apply(self, artifact: Artifact) -> Artifact:
        raise ExportError("quantize: this graph has no quantizable ops")


def test_a_successful_export_reports_every_step_ok(
    iris: tuple[Path, Array], model_repository: Path, export_session: ExportSession
) -> None:
    path, rows = iris
    seen: list[tuple[str, str]] = []
    transform = Retitle()
    result = export_sklearn(
        path, name="steps-iris", repository=model_repository, sample=rows,
        session=export_session, transforms=[transform],
        progress=lambda step: seen.append((step.name, step.status)),
    )  # fmt: skip
    plan = ["convert", "retitle", "write", "parity", "publish"]
    assert _statuses(result.steps) == [(name, "ok") for name in plan]
    assert all(step.seconds >= 0 for step in result.steps)
    assert result.steps[3].seconds > 0  # the parity step ran a real Triton request
    assert seen == [(name, status) for name in plan for status in ("running", "ok")]
    assert transform.applied == 1 and result.manifest.framework_versions["t"] == "1"

    again = export_sklearn(
        path, name="steps-iris", repository=model_repository, sample=rows,
        session=export_session, transforms=[Retitle()],
    )  # fmt: skip
    assert again.reused and again.triton_name == result.triton_name
    assert _statuses(again.steps) == [
        ("convert", "ok"), ("retitle", "ok"), ("write", "skipped"),
        ("parity", "skipped"), ("publish", "skipped"),
    ]  # fmt: skip
    assert again.steps[2].detail == "already published (unchanged)"


def test_a_failed_transform_skips_the_rest(
    tmp_path: Path, iris: tuple[Path, Array], repository_snapshot: Snapshot
) -> None:
    path, rows = iris
    before = repository_snapshot(tmp_path)
    with pytest.raises(ExportError, match="no quantizable ops") as refused:
        export_sklearn(path, name="q", repository=tmp_path, sample=rows, transforms=[Refuse()])
    assert _statuses(refused.value.steps) == [
        ("convert", "ok"), ("quantize", "failed"), ("write", "skipped"),
        ("parity", "skipped"), ("publish", "skipped"),
    ]  # fmt: skip
    assert refused.value.steps[2].detail == "after quantize failed"
    assert repository_snapshot(tmp_path) == before


def test_a_failed_convert_is_reported_as_convert(tmp_path: Path, iris: tuple[Path, Array]) -> None:
    path, rows = iris
    with pytest.raises(ExportError, match="3 columns") as refused:
        export_sklearn(path, name="narrow", repository=tmp_path, sample=rows[:, :3])
    assert _statuses(refused.value.steps) == [
        ("convert", "failed"),
        ("write", "skipped"),
        ("parity", "skipped"),
        ("publish", "skipped"),
    ]
    assert "3 columns" in refused.value.steps[0].detail


@pytest.mark.slow
def test_a_failed_parity_check_skips_publish_and_publishes_nothing(
    tmp_path: Path, repository_snapshot: Snapshot
) -> None:
    x, y = load_diabetes(return_X_y=True)
    model = lightgbm.LGBMRegressor(n_estimators=30, verbose=-1).fit(x.astype(np.float32), y)
    model.booster_.save_model(tmp_path / "lgbm.txt")
    repository = tmp_path / "repository"
    repository.mkdir()
    before = repository_snapshot(repository)
    finished: list[StepRecord] = []

    def record(step: StepRecord) -> None:
        if step.status != "running":
            finished.append(step)

    # float32 ONNX arithmetic cannot meet a 1e-12 bound on values near 150.
    with pytest.raises(ExportError, match="parity check failed") as failed:
        export_lightgbm(
            tmp_path / "lgbm.txt", name="strict", repository=repository,
            sample=x[:50].astype(np.float32), atol=1e-12, rtol=0.0,
            progress=record,
        )  # fmt: skip
    expected = [("convert", "ok"), ("write", "ok"), ("parity", "failed"), ("publish", "skipped")]
    assert _statuses(failed.value.steps) == expected
    assert _statuses(tuple(finished)) == expected
    assert "parity check failed: output 'variable'" in failed.value.steps[2].detail
    assert repository_snapshot(repository) == before
    assert not list(repository.glob("strict*"))


def test_the_next_command_is_the_real_register_command() -> None:
    hint = next_command("iris-0123456789", "http://127.0.0.1:8081")
    assert hint == (
        "conch models register iris-0123456789 --url http://127.0.0.1:8081"
        ' --api-key "$CONCH_API_KEY"'
    )
    # The hint parses against the real `conch models register`: with a key and a closed
    # port it gets as far as the HTTP call (exit 1, "cannot reach"), not a usage error (2).
    args = [arg if arg != "$CONCH_API_KEY" else "key" for arg in shlex.split(hint)[1:]]
    closed = f"http://127.0.0.1:{free_port()}"
    args[args.index("--url") + 1] = closed
    result = CliRunner().invoke(with_commands(), args)
    assert result.exit_code == 1, result.output
    assert f"cannot reach {closed}" in result.output


def test_cli_shows_steps_a_summary_and_the_next_command(
    tmp_path: Path, iris: tuple[Path, Array]
) -> None:
    path, rows = iris
    np.save(tmp_path / "rows.npy", rows)
    url = f"http://127.0.0.1:{free_port()}"
    args = ["sklearn", str(path), "--name", "iris", "--repository", str(tmp_path / "repo")]
    result = CliRunner().invoke(
        app, [*args, "--sample-data", str(tmp_path / "rows.npy"), "--url", url]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for label in ("convert to the serving format", "parity check through Triton"):
        assert any(label in line and line.rstrip().endswith("s") for line in lines), label
    summary = [line.split() for line in lines if line.split()[:1] in (["write"], ["publish"])]
    assert [row[:2] for row in summary] == [["write", "ok"], ["publish", "ok"]]
    triton_name = next(word for word in result.output.split() if word.startswith("iris-"))
    assert next_command(triton_name, url) in result.output
