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

from conch_manifest.schema import ClassLabel
from exporters.arrays import Array
from exporters.errors import ExportError
from exporters.tabular import (
    ONNX_ML_OPSET,
    ONNX_OPSET,
    TabularSource,
    native_labels,
    tabular_exporter,
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


class SklearnSource(TabularSource):
    framework = "sklearn"
    version_modules = {"scikit-learn": "sklearn", "skl2onnx": "skl2onnx"}

    def __init__(self, model_path: Path) -> None:
        from sklearn.base import is_classifier, is_regressor

        self.model = load_sklearn_model(model_path)
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


export_sklearn = tabular_exporter(SklearnSource)
