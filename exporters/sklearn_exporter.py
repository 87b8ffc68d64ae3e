"""scikit-learn estimators and Pipelines -> ONNX (skl2onnx), served by onnxruntime.

Classifiers export their class probabilities (`zipmap=False` keeps them a plain
FP32 matrix instead of a list of dicts); regressors their prediction. A Pipeline
that starts with a text vectorizer takes one string per sample instead of a
feature row (exporters/text.py); `export_sklearn` tells the two apart by the
loaded model. The model is read from a joblib/pickle file: unpickling runs code,
so export only files you trust.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from conch_manifest.schema import ClassLabel
from exporters.arrays import Array
from exporters.errors import ExportError
from exporters.pipeline import Artifact, ExportResult, ExportTarget, ServingOptions, run_export
from exporters.tabular import (
    ONNX_ML_OPSET,
    ONNX_OPSET,
    TabularSource,
    convert_tabular,
    native_labels,
)
from exporters.text import convert_text, find_text_vectorizer


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


class SklearnSource(TabularSource):
    framework = "sklearn"
    version_modules = {"scikit-learn": "sklearn", "skl2onnx": "skl2onnx"}

    def __init__(self, model: Path | Any) -> None:
        """`model`: a model file, or an estimator already loaded from one."""
        from sklearn.base import is_classifier, is_regressor

        self.model = load_sklearn_model(model) if isinstance(model, Path) else model
        if find_text_vectorizer(self.model) is not None:
            raise ExportError("this is a text pipeline, not a tabular model: use export_sklearn")
        n_features = getattr(self.model, "n_features_in_", None)
        if n_features is None:
            raise ExportError("the estimator is not fitted (it has no n_features_in_)")
        self.n_features = int(n_features)
        self.classifier = is_classifier(self.model)
        kind = type(self.model).__name__
        if not self.classifier and not is_regressor(self.model):
            raise ExportError(f"{kind} is neither a classifier nor a regressor")
        if self.classifier and not hasattr(self.model, "predict_proba"):
            raise ExportError(f"{kind} has no predict_proba to export")

    def feature_names(self) -> list[str] | None:
        return [str(n) for n in getattr(self.model, "feature_names_in_", [])] or None

    def predict(self, rows: Array) -> tuple[list[ClassLabel] | None, Array]:
        if self.classifier:
            # In the type of classes_, as model.predict returns them (ints stay ints).
            return native_labels(self.model.classes_), self.model.predict_proba(rows)
        return None, self.model.predict(rows)

    def to_onnx(self) -> Any:
        import skl2onnx
        from skl2onnx.common.data_types import FloatTensorType

        try:
            return skl2onnx.convert_sklearn(
                self.model,
                initial_types=[("input", FloatTensorType([None, self.n_features]))],
                # zipmap=False: probabilities as a plain FP32 matrix, not a list of dicts.
                options={id(self.model): {"zipmap": False}} if self.classifier else None,
                target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
            )
        except Exception as exc:  # skl2onnx raises many types for unsupported models
            kind = type(self.model).__name__
            raise ExportError(f"skl2onnx could not convert {kind}: {exc}") from exc


def export_sklearn(
    model_path: Path,
    *,
    sample: Array | Path | Sequence[str],
    feature_names: list[str] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    **target: Unpack[ExportTarget],
) -> ExportResult:
    """A tabular estimator or a text pipeline, told apart by the loaded model.

    `sample` holds the parity rows: a feature table (array, .npy or .csv) for a
    tabular model, texts (a list, or a .txt/.json/.npy file) for a text pipeline;
    `feature_names` applies to tabular models only.
    """

    def convert(name: str, options: ServingOptions) -> Artifact:
        model = load_sklearn_model(model_path)
        vectorizer = find_text_vectorizer(model)
        if vectorizer is not None:
            if feature_names is not None:
                raise ExportError("feature names do not apply to a text model: its input is text")
            return convert_text(model, vectorizer, name, options, sample, atol, rtol)
        rows = sample if isinstance(sample, Path) else np.asarray(sample)
        return convert_tabular(SklearnSource(model), name, options, rows, feature_names, atol, rtol)

    return run_export(convert, **target)
