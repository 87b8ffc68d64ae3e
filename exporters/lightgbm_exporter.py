"""LightGBM boosters -> ONNX (onnxmltools), served by onnxruntime.

The model is read from LightGBM's text format (`.txt`, written by
`booster.save_model`), which holds no code. `binary` and `multiclass`
objectives export class probabilities; regression objectives the prediction.

LightGBM splits on float64 thresholds, the ONNX tree ensemble on float32 ones:
a model trained on float64 features can send a row down another branch once
served. Train on float32 features (as Triton will receive them); the parity
check reports the rows where it matters.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

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

FLOAT32_HINT = (
    " (LightGBM splits on float64 thresholds, ONNX on float32: retrain on float32 features "
    "or raise --atol / --rtol)"
)
REGRESSION_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
OBJECTIVE_KINDS: dict[str, BoosterKind] = {
    "binary": "binary",
    "multiclass": "multiclass",
    "multiclassova": "multiclass",
    **dict.fromkeys(REGRESSION_OBJECTIVES, "regression"),
}


def load_lightgbm_booster(path: Path) -> Any:
    import lightgbm

    if not path.is_file():
        raise ExportError(f"model file {path} does not exist")
    if path.suffix != ".txt":
        raise ExportError(f"LightGBM models must be saved with save_model as .txt, not {path.name}")
    _check_intact(path)
    try:
        return lightgbm.Booster(model_file=str(path))
    except Exception as exc:  # LightGBMError for damaged or truncated files
        raise ExportError(f"could not load {path} as a LightGBM model: {exc}") from exc


def _check_intact(path: Path) -> None:
    """Refuse damaged files before LightGBM parses them.

    LightGBM's parser crashes the whole process (SIGSEGV/abort, measured with
    lightgbm 4.7) on a truncated model file instead of raising, so the structure
    is checked here, then the file is loaded once in a child process.
    """
    text = path.read_bytes()
    sizes = re.search(rb"^tree_sizes=([0-9 ]*)$", text, re.MULTILINE)
    trees = len(re.findall(rb"^Tree=\d+$", text, re.MULTILINE))
    complete = b"\nend of trees\n" in text and b"\nend of parameters\n" in text
    if not complete or (sizes is not None and len(sizes.group(1).split()) != trees):
        raise ExportError(f"could not load {path} as a LightGBM model: the file is incomplete")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import lightgbm, sys; lightgbm.Booster(model_file=sys.argv[1])",
            path,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        raise ExportError(f"could not load {path} as a LightGBM model: {last}")


class LightGBMSource(TabularSource):
    framework = "lightgbm"
    version_modules = {"lightgbm": "lightgbm", "onnxmltools": "onnxmltools"}
    parity_hint = FLOAT32_HINT

    def __init__(self, model_path: Path) -> None:
        self.booster = load_lightgbm_booster(model_path)
        objective = str(self.booster.dump_model()["objective"]).split()[0]
        kind = OBJECTIVE_KINDS.get(objective)
        if kind is None:
            raise ExportError(
                f"LightGBM objective {objective!r} is not supported: use binary, multiclass "
                "or a regression objective"
            )
        self.kind = kind
        self.n_features = int(self.booster.num_feature())

    def feature_names(self) -> list[str] | None:
        return list(self.booster.feature_name())

    def predict(self, rows: Array) -> tuple[list[ClassLabel] | None, Array]:
        # LightGBM predicts in float64 from the same float32 rows Triton receives.
        return booster_outputs(self.kind, self.booster.predict(rows.astype(np.float64)))

    def to_onnx(self) -> Any:
        import onnxmltools

        return onnxmltools_convert(
            onnxmltools.convert_lightgbm, "LightGBM", self.booster, self.n_features, zipmap=False
        )


export_lightgbm = tabular_exporter(LightGBMSource)
