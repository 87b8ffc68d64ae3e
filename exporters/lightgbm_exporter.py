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

FLOAT32_HINT = (
    " (LightGBM splits on float64 thresholds, ONNX on float32: retrain on float32 features "
    "or raise --tolerance)"
)
REGRESSION_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")


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


def export_lightgbm(
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
    import lightgbm
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    progress("convert")
    booster = load_lightgbm_booster(model_path)
    objective = str(booster.dump_model()["objective"]).split()[0]
    n_features = booster.num_feature()
    rows, header = load_sample(sample) if isinstance(sample, Path) else (sample, None)
    rows = check_sample(np.asarray(rows, dtype=np.float32), n_features)

    # LightGBM predicts in float64 from the same float32 rows Triton receives.
    predictions = booster.predict(rows.astype(np.float64))
    if objective == "binary":
        class_labels: list[str] | None = ["0", "1"]
        expected = np.stack([1.0 - predictions, predictions], axis=1)
    elif objective in ("multiclass", "multiclassova"):
        class_labels = [str(i) for i in range(predictions.shape[1])]
        expected = predictions
    elif objective in REGRESSION_OBJECTIVES:
        class_labels, expected = None, predictions
    else:
        raise ExportError(
            f"LightGBM objective {objective!r} is not supported: use binary, multiclass "
            "or a regression objective"
        )
    try:
        onnx_model = onnxmltools.convert_lightgbm(
            booster,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            target_opset=ONNX_OPSET,
            zipmap=False,
        )
    except Exception as exc:  # onnxmltools raises many types for unsupported boosters
        raise ExportError(f"onnxmltools could not convert the LightGBM model: {exc}") from exc

    artifact = tabular_artifact(
        name=name,
        framework="lightgbm",
        onnx_bytes=onnx_bytes(onnx_model),
        feature_names=resolve_feature_names(n_features, booster.feature_name(), header),
        class_labels=class_labels,
        sample=rows,
        expected=np.asarray(expected),
        tolerance=tolerance,
        options=options,
        framework_versions={
            "lightgbm": lightgbm.__version__,
            "onnxmltools": onnxmltools.__version__,
        },
        parity_hint=FLOAT32_HINT,
    )
    with session_scope(repository, session) as active:
        return publish_artifact(artifact, active, progress)
