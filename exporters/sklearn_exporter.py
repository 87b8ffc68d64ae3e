"""scikit-learn estimators and Pipelines -> ONNX (skl2onnx), served by onnxruntime.

Classifiers export their class probabilities (`zipmap=False` keeps them a plain
FP32 matrix instead of a list of dicts); regressors their prediction. The model
is read from a joblib/pickle file: unpickling runs code, so export only files
you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from exporters.arrays import Array
from exporters.errors import ExportError
from exporters.pipeline import (
    ExportResult,
    ProgressHook,
    ServingOptions,
    no_progress,
    publish_artifact,
    session_scope,
)
from exporters.session import ExportSession
from exporters.tabular import (
    ONNX_ML_OPSET,
    ONNX_OPSET,
    check_sample,
    load_sample,
    onnx_bytes,
    resolve_feature_names,
    tabular_artifact,
)


def load_sklearn_model(path: Path) -> Any:
    """A fitted estimator from a .joblib or .pkl file (this executes the pickle)."""
    import joblib
    from sklearn.base import BaseEstimator

    if not path.is_file():
        raise ExportError(f"model file {path} does not exist")
    try:
        if path.suffix in (".pkl", ".pickle"):
            with path.open("rb") as handle:
                model = pickle.load(handle)
        else:
            model = joblib.load(path)
    except Exception as exc:  # unpickling raises anything: EOFError, UnpicklingError, ...
        raise ExportError(f"could not load {path} as a scikit-learn model: {exc!r}") from exc
    if not isinstance(model, BaseEstimator):
        raise ExportError(f"{path} holds a {type(model).__name__}, not a scikit-learn estimator")
    return model


def export_sklearn(
    model_path: Path,
    *,
    name: str,
    repository: Path,
    sample: Array | Path,
    feature_names: list[str] | None = None,
    tolerance: float | None = None,
    options: ServingOptions = ServingOptions(),
    session: ExportSession | None = None,
    progress: ProgressHook = no_progress,
) -> ExportResult:
    import skl2onnx
    import sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier, is_regressor

    progress("convert")
    model = load_sklearn_model(model_path)
    rows, header = load_sample(sample) if isinstance(sample, Path) else (sample, None)
    n_features = getattr(model, "n_features_in_", None)
    if n_features is None:
        raise ExportError("the estimator is not fitted (it has no n_features_in_)")
    rows = check_sample(np.asarray(rows, dtype=np.float32), int(n_features))
    classifier = is_classifier(model)
    if not classifier and not is_regressor(model):
        raise ExportError(f"{type(model).__name__} is neither a classifier nor a regressor")
    if classifier and not hasattr(model, "predict_proba"):
        raise ExportError(f"{type(model).__name__} has no predict_proba to export")

    try:
        onnx_model = skl2onnx.convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, int(n_features)]))],
            options={id(model): {"zipmap": False}} if classifier else None,
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises many types for unsupported models
        raise ExportError(f"skl2onnx could not convert {type(model).__name__}: {exc}") from exc

    expected = model.predict_proba(rows) if classifier else model.predict(rows)
    if feature_names is None:
        from_model = [str(n) for n in getattr(model, "feature_names_in_", [])] or None
        feature_names = resolve_feature_names(int(n_features), from_model, header)
    elif len(feature_names) != n_features:
        raise ExportError(f"{len(feature_names)} feature names for {n_features} features")
    artifact = tabular_artifact(
        name=name,
        framework="sklearn",
        onnx_bytes=onnx_bytes(onnx_model),
        feature_names=feature_names,
        class_labels=[str(c) for c in model.classes_] if classifier else None,
        sample=rows,
        expected=np.asarray(expected),
        tolerance=tolerance,
        options=options,
        framework_versions={"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__},
    )
    with session_scope(repository, session) as active:
        return publish_artifact(artifact, active, progress)
