"""scikit-learn, XGBoost and LightGBM exports: converted, parity-checked, served."""

from __future__ import annotations

from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conch_manifest.layout import load_manifest, verify_files
from exporters.errors import ExportError
from exporters.lightgbm_exporter import export_lightgbm
from exporters.pipeline import ServingOptions
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn
from exporters.xgboost_exporter import export_xgboost


def _split(loader):  # type: ignore[no-untyped-def]
    x, y = loader(return_X_y=True)
    x_train, x_test, y_train, _ = train_test_split(x, y, random_state=0)
    return x_train, x_test.astype(np.float32), y_train


def test_sklearn_pipeline_classifier(
    sources: Path, model_repository: Path, export_session: ExportSession, served
) -> None:
    x_train, x_test, y_train = _split(load_iris)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x_train, y_train)
    joblib.dump(model, sources / "iris.joblib")
    csv = sources / "iris.csv"
    header = "sepal_length,sepal_width,petal_length,petal_width"
    np.savetxt(csv, x_test, delimiter=",", header=header, comments="")

    result = export_sklearn(
        sources / "iris.joblib", name="iris", repository=model_repository, sample=csv,
        session=export_session,
    )  # fmt: skip

    manifest = load_manifest(model_repository, result.triton_name)
    assert manifest.parity.passed and manifest.parity.max_abs_diff is not None
    assert manifest.parity.max_abs_diff < 1e-5
    assert manifest.inputs[0].feature_names == header.split(",")
    assert manifest.outputs[0].class_labels == ["0", "1", "2"]
    assert manifest.outputs[0].typed_class_labels() == [0, 1, 2]  # classes_ are int64
    assert manifest.framework_versions["scikit-learn"]
    assert verify_files(model_repository, manifest) == []
    assert set(manifest.files) == {"1/model.onnx", "config.pbtxt"}
    assert result.triton_name.startswith("iris-") and len(result.triton_name) == len("iris-") + 10

    got = served(result.triton_name, {"input": x_test[:5]}, ["probabilities"])
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x_test[:5]), atol=1e-5)


def test_sklearn_regressor(
    sources: Path, model_repository: Path, export_session: ExportSession
) -> None:
    x_train, x_test, y_train = _split(load_diabetes)
    model = GradientBoostingRegressor(n_estimators=40, random_state=0).fit(x_train, y_train)
    joblib.dump(model, sources / "diabetes.joblib")
    result = export_sklearn(
        sources / "diabetes.joblib", name="diabetes-gbr", repository=model_repository,
        sample=x_test, session=export_session,
    )  # fmt: skip
    assert result.manifest.task == "regression"
    assert result.manifest.parity.passed
    assert result.manifest.outputs[0].name == "variable"


def test_reexport_is_a_noop(
    sources: Path, model_repository: Path, export_session: ExportSession
) -> None:
    x_train, x_test, y_train = _split(load_iris)
    joblib.dump(LogisticRegression(max_iter=500).fit(x_train, y_train), sources / "lr.joblib")
    first = export_sklearn(
        sources / "lr.joblib", name="iris-lr", repository=model_repository, sample=x_test,
        session=export_session,
    )  # fmt: skip
    mtime = (first.path / "manifest.json").stat().st_mtime_ns
    second = export_sklearn(
        sources / "lr.joblib", name="iris-lr", repository=model_repository, sample=x_test,
        session=export_session,
    )  # fmt: skip
    assert not first.reused and second.reused
    assert second.triton_name == first.triton_name
    assert (second.path / "manifest.json").stat().st_mtime_ns == mtime
    # Published entries never change: other serving options need another name.
    with pytest.raises(ExportError, match="already published with other serving options"):
        export_sklearn(
            sources / "lr.joblib", name="iris-lr", repository=model_repository, sample=x_test,
            options=ServingOptions(max_batch_size=8), session=export_session,
        )  # fmt: skip


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor"])
def test_xgboost(
    kind: str, sources: Path, model_repository: Path, export_session: ExportSession
) -> None:
    loader = {"binary": load_breast_cancer, "multiclass": load_iris, "regressor": load_diabetes}
    x_train, x_test, y_train = _split(loader[kind])
    estimator = xgboost.XGBRegressor if kind == "regressor" else xgboost.XGBClassifier
    path = sources / f"xgb-{kind}.{'ubj' if kind == 'multiclass' else 'json'}"
    estimator(n_estimators=30, max_depth=3).fit(x_train, y_train).save_model(path)
    result = export_xgboost(
        path, name=f"xgb-{kind}", repository=model_repository, sample=x_test,
        session=export_session,
    )  # fmt: skip
    assert result.manifest.parity.passed, result.manifest.parity.detail
    assert result.manifest.task == ("regression" if kind == "regressor" else "classification")


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor"])
def test_lightgbm(
    kind: str, sources: Path, model_repository: Path, export_session: ExportSession
) -> None:
    loader = {"binary": load_breast_cancer, "multiclass": load_iris, "regressor": load_diabetes}
    x_train, x_test, y_train = _split(loader[kind])
    estimator = lightgbm.LGBMRegressor if kind == "regressor" else lightgbm.LGBMClassifier
    # Trained on float32 features, as served: LightGBM keeps float64 thresholds, the
    # ONNX tree ensemble float32 ones, and rows between the two would flip branches.
    model = estimator(n_estimators=30, verbose=-1).fit(x_train.astype(np.float32), y_train)
    path = sources / f"lgbm-{kind}.txt"
    model.booster_.save_model(path)
    result = export_lightgbm(
        path, name=f"lgbm-{kind}", repository=model_repository, sample=x_test,
        session=export_session,
    )  # fmt: skip
    assert result.manifest.parity.passed, result.manifest.parity.detail
    if kind == "multiclass":
        assert result.manifest.outputs[0].class_labels == ["0", "1", "2"]
