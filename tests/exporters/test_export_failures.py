"""Refused exports leave the repository byte-for-byte as it was, and say why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pytest
import torch
import xgboost
from scipy import sparse
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from conch_manifest.schema import MANIFEST_FILENAME
from exporters.cli import app
from exporters.errors import ExportError
from exporters.implicit import Interactions, train_item_knn
from exporters.lightgbm_exporter import export_lightgbm
from exporters.recommender import export_recommender
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from exporters.torch_exporter import export_torch
from exporters.xgboost_exporter import export_xgboost

Snapshot = Callable[[Path], dict[str, bytes]]


@pytest.fixture(scope="module")
def iris(sources: Path) -> tuple[Path, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), sources / "iris.joblib")
    return sources / "iris.joblib", x[:30].astype(np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, iris: tuple[Path, np.ndarray]) -> Path:
    """A repository that already holds one published model, so 'untouched' means something."""
    root = tmp_path_factory.mktemp("failures-repo")
    path, rows = iris
    export_sklearn(path, name="iris", repository=root, sample=rows)
    return root


def _truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def test_truncated_model_files_are_refused(
    tmp_path: Path, repository: Path, iris: tuple[Path, np.ndarray], repository_snapshot: Snapshot
) -> None:
    path, rows = iris
    x, y = load_diabetes(return_X_y=True)
    xgboost.XGBRegressor(n_estimators=5).fit(x, y).save_model(tmp_path / "xgb.json")
    lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(x, y).booster_.save_model(
        tmp_path / "lgbm.txt"
    )
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(tmp_path / "net.pt"))
    one_user = Interactions(["u"], ["a", "b"], sparse.csr_matrix(np.ones((1, 2))))
    train_item_knn(one_user).save(tmp_path / "rec.npz")
    cases = [
        (export_sklearn, path, {"sample": rows}, "as a scikit-learn model"),
        (export_xgboost, tmp_path / "xgb.json", {"sample": x[:5]}, "as an XGBoost model"),
        (export_lightgbm, tmp_path / "lgbm.txt", {"sample": x[:5]}, "as a LightGBM model"),
        (export_torch, tmp_path / "net.pt", {"input_shape": (4,)}, "as a PyTorch model"),
        (export_recommender, tmp_path / "rec.npz", {}, "as a Conch recommender"),
    ]
    before = repository_snapshot(repository)
    for export, source, extra, message in cases:
        broken = _truncated(source, tmp_path / f"broken{source.suffix}")
        with pytest.raises(ExportError, match=message):
            export(broken, name="broken", repository=repository, **extra)  # type: ignore[operator]
        assert repository_snapshot(repository) == before, export.__name__


def test_wrong_feature_count_is_refused(
    repository: Path, iris: tuple[Path, np.ndarray], repository_snapshot: Snapshot
) -> None:
    path, rows = iris
    before = repository_snapshot(repository)
    with pytest.raises(ExportError, match="3 columns but the model expects 4 features"):
        export_sklearn(path, name="iris", repository=repository, sample=rows[:, :3])
    assert repository_snapshot(repository) == before


@pytest.mark.slow
def test_parity_failure_reports_and_leaves_nothing(
    tmp_path: Path, repository: Path, repository_snapshot: Snapshot
) -> None:
    x, y = load_diabetes(return_X_y=True)
    model = lightgbm.LGBMRegressor(n_estimators=30, verbose=-1).fit(x.astype(np.float32), y)
    model.booster_.save_model(tmp_path / "lgbm.txt")
    before = repository_snapshot(repository)
    # float32 ONNX arithmetic cannot meet a 1e-12 bound on values near 150.
    failure = r"parity check failed: output 'variable'.*at row \d+.*--atol or --rtol"
    with pytest.raises(ExportError, match=failure):
        export_lightgbm(
            tmp_path / "lgbm.txt", name="strict", repository=repository,
            sample=x[:50].astype(np.float32), atol=1e-12, rtol=0.0,
        )  # fmt: skip
    assert repository_snapshot(repository) == before


def test_tampered_published_model_is_never_overwritten(
    tmp_path: Path, iris: tuple[Path, np.ndarray]
) -> None:
    path, rows = iris
    with ExportSession(tmp_path) as session:
        result = export_sklearn(
            path, name="iris", repository=tmp_path, sample=rows, session=session
        )
        (result.path / "config.pbtxt").write_text("tampered")
        with pytest.raises(ExportError, match=r"config\.pbtxt no longer match"):
            export_sklearn(path, name="iris", repository=tmp_path, sample=rows, session=session)
    assert (result.path / "config.pbtxt").read_text() == "tampered"
    assert (result.path / MANIFEST_FILENAME).is_file()


def test_cli_exports_and_fails_with_one_line(
    tmp_path: Path, iris: tuple[Path, np.ndarray], repository_snapshot: Snapshot
) -> None:
    path, rows = iris
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "narrow.npy", rows[:, :2])
    repo = tmp_path / "repo"
    runner = CliRunner()
    args = ["sklearn", str(path), "--name", "iris", "--repository", str(repo)]

    ok = runner.invoke(app, [*args, "--sample-data", str(tmp_path / "rows.npy")])
    assert ok.exit_code == 0, ok.output
    assert "iris-" in ok.output and "parity: passed" in ok.output

    before = repository_snapshot(repo)
    bad = runner.invoke(app, [*args, "--sample-data", str(tmp_path / "narrow.npy")])
    assert bad.exit_code == 1
    assert "error: sample data has 2 columns but the model expects 4 features" in bad.output
    assert "Traceback" not in bad.output
    assert repository_snapshot(repo) == before


def test_help_warns_about_pickles() -> None:
    result = CliRunner().invoke(app, ["sklearn", "--help"])
    assert "export only files you trust" in " ".join(result.output.split())
