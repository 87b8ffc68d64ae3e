"""XGBoost boosters -> ONNX (onnxmltools), served by onnxruntime.

The model is read from XGBoost's own formats (`.json` or `.ubj`, written by
`save_model`), which hold no code. Binary and multi-class `softprob`
classifiers export class probabilities; `reg:*` objectives the prediction.
"""

from __future__ import annotations

import json
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
    ONNX_OPSET,
    check_sample,
    load_sample,
    onnx_bytes,
    resolve_feature_names,
    tabular_artifact,
)

NATIVE_SUFFIXES = (".json", ".ubj")


def load_xgboost_booster(path: Path) -> Any:
    import xgboost

    if not path.is_file():
        raise ExportError(f"model file {path} does not exist")
    if path.suffix not in NATIVE_SUFFIXES:
        raise ExportError(
            f"XGBoost models must be saved with save_model as .json or .ubj, not {path.name}"
        )
    try:
        return xgboost.Booster(model_file=str(path))
    except Exception as exc:  # XGBoostError, or a decoder error for damaged files
        raise ExportError(f"could not load {path} as an XGBoost model: {exc}") from exc


def export_xgboost(
    model_path: Path,
    *,
    name: str,
    repository: Path,
    sample: Array | Path,
    tolerance: float | None = None,
    options: ServingOptions = ServingOptions(),
    session: ExportSession | None = None,
    progress: ProgressHook = no_progress,
) -> ExportResult:
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    progress("convert")
    booster = load_xgboost_booster(model_path)
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    n_features = booster.num_features()
    rows, header = load_sample(sample) if isinstance(sample, Path) else (sample, None)
    rows = check_sample(np.asarray(rows, dtype=np.float32), n_features)

    predictions = booster.predict(xgboost.DMatrix(rows))
    if objective == "binary:logistic":
        class_labels: list[str] | None = ["0", "1"]
        expected = np.stack([1.0 - predictions, predictions], axis=1)
    elif objective == "multi:softprob":
        class_labels = [str(i) for i in range(int(learner["learner_model_param"]["num_class"]))]
        expected = predictions
    elif objective.startswith("reg:"):
        class_labels, expected = None, predictions
    else:
        raise ExportError(
            f"XGBoost objective {objective!r} is not supported: use binary:logistic, "
            "multi:softprob or a reg: objective"
        )
    try:
        onnx_model = onnxmltools.convert_xgboost(
            booster,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            target_opset=ONNX_OPSET,
        )
    except Exception as exc:  # onnxmltools raises many types for unsupported boosters
        raise ExportError(f"onnxmltools could not convert the XGBoost model: {exc}") from exc

    artifact = tabular_artifact(
        name=name,
        framework="xgboost",
        onnx_bytes=onnx_bytes(onnx_model),
        feature_names=resolve_feature_names(n_features, booster.feature_names, header),
        class_labels=class_labels,
        sample=rows,
        expected=np.asarray(expected),
        tolerance=tolerance,
        options=options,
        framework_versions={"xgboost": xgboost.__version__, "onnxmltools": onnxmltools.__version__},
    )
    with session_scope(repository, session) as active:
        return publish_artifact(artifact, active, progress)
