"""XGBoost boosters -> ONNX (onnxmltools), served by onnxruntime.

The model is read from XGBoost's own formats (`.json` or `.ubj`, written by
`save_model`), which hold no code. Binary and multi-class `softprob`
classifiers export class probabilities; `reg:*` objectives the prediction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conch_manifest.schema import ClassLabel
from exporters.arrays import Array
from exporters.errors import ExportError
from exporters.tabular import (
    BoosterKind,
    TabularSource,
    booster_outputs,
    onnxmltools_convert,
    tabular_exporter,
)

NATIVE_SUFFIXES = (".json", ".ubj")
OBJECTIVE_KINDS: dict[str, BoosterKind] = {
    "binary:logistic": "binary",
    "multi:softprob": "multiclass",
}


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


class XGBoostSource(TabularSource):
    framework = "xgboost"
    version_modules = {"xgboost": "xgboost", "onnxmltools": "onnxmltools"}

    def __init__(self, model_path: Path) -> None:
        self.booster = load_xgboost_booster(model_path)
        self.learner = json.loads(self.booster.save_config())["learner"]
        objective = self.learner["objective"]["name"]
        kind = "regression" if objective.startswith("reg:") else OBJECTIVE_KINDS.get(objective)
        if kind is None:
            raise ExportError(
                f"XGBoost objective {objective!r} is not supported: use binary:logistic, "
                "multi:softprob or a reg: objective"
            )
        self.kind: BoosterKind = kind
        self.n_features = int(self.booster.num_features())

    def feature_names(self) -> list[str] | None:
        names = self.booster.feature_names
        return None if names is None else list(names)

    def predict(self, rows: Array) -> tuple[list[ClassLabel] | None, Array]:
        import xgboost

        return booster_outputs(self.kind, self.booster.predict(xgboost.DMatrix(rows)))

    def to_onnx(self) -> Any:
        import onnxmltools

        return onnxmltools_convert(
            onnxmltools.convert_xgboost, "XGBoost", self.booster, self.n_features
        )


export_xgboost = tabular_exporter(XGBoostSource)
