"""What the tabular exporters (sklearn, xgboost, lightgbm) share.

Their ONNX graphs all take one FP32 matrix `input` [batch, n_features] and give
either `probabilities` [batch, n_classes] or `variable` [batch, 1].
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from conch_manifest.schema import Framework, TensorSpec
from exporters import parity
from exporters.arrays import Array
from exporters.config import ModelConfigSpec, TensorConfig
from exporters.errors import ExportError
from exporters.pipeline import Artifact, ParityCase, ServingOptions, config_dims

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
REGRESSION_OUTPUT = "variable"
# skl2onnx/onnxmltools support up to these opsets; onnxruntime runs both.
ONNX_OPSET = 15
ONNX_ML_OPSET = 3


def onnx_bytes(model: Any) -> bytes:
    """Serialized ONNX with a fixed graph name: converters name graphs with a random
    UUID, which would give the same model a new content-addressed name on every export."""
    model.graph.name = "conch"
    return bytes(model.SerializeToString())


def load_sample(path: Path) -> tuple[Array, list[str] | None]:
    """Held-out rows for the parity check, from `.npy` or `.csv` (header optional).

    Returns float32 rows and the CSV header's feature names when there is one.
    """
    if not path.is_file():
        raise ExportError(f"sample data file {path} does not exist")
    header: list[str] | None = None
    try:
        if path.suffix == ".npy":
            rows = np.load(path, allow_pickle=False)  # never unpickle sample data
        elif path.suffix == ".csv":
            with path.open(newline="") as handle:
                first = next(csv.reader(handle), [])
            header = first if first and not _all_numeric(first) else None
            rows = np.loadtxt(path, delimiter=",", skiprows=1 if header else 0, ndmin=2)
        else:
            raise ExportError(f"sample data must be a .npy or .csv file, not {path.name}")
        rows = np.asarray(rows, dtype=np.float32)
    except (ValueError, OSError) as exc:
        raise ExportError(f"could not read sample data {path}: {exc}") from exc
    return rows, header


def _all_numeric(fields: list[str]) -> bool:
    try:
        [float(field) for field in fields]
    except ValueError:
        return False
    return True


def check_sample(rows: Array, n_features: int) -> Array:
    if rows.ndim != 2 or len(rows) == 0:
        raise ExportError(f"sample data must be a non-empty 2-D table, got shape {rows.shape}")
    if rows.shape[1] != n_features:
        raise ExportError(
            f"sample data has {rows.shape[1]} columns but the model expects {n_features} features"
        )
    if not np.isfinite(rows).all():
        raise ExportError("sample data contains NaN or infinite values")
    return np.ascontiguousarray(rows, dtype=np.float32)


def tabular_artifact(
    *,
    name: str,
    framework: Framework,
    onnx_bytes: bytes,
    feature_names: list[str],
    class_labels: list[str] | None,
    sample: Array,
    expected: Array,
    tolerance: float | None,
    options: ServingOptions,
    framework_versions: dict[str, str],
    parity_hint: str = "",
) -> Artifact:
    """An Artifact for a classifier (class_labels given) or a regressor."""
    n_features = len(feature_names)
    if class_labels is not None:
        output = PROBABILITIES
        width = len(class_labels)
        meaning = "probability of each class, columns in class_labels order"
        compare = parity.numeric(
            {output: expected},
            parity.PROBABILITY_TOLERANCE if tolerance is None else tolerance,
            relative=False,
        )
    else:
        output = REGRESSION_OUTPUT
        width = 1
        meaning = "predicted value"
        compare = parity.numeric(
            {output: expected.reshape(-1, 1)},
            parity.RELATIVE_TOLERANCE if tolerance is None else tolerance,
            relative=True,
        )
    config = ModelConfigSpec(
        name=name,
        backend="onnxruntime",
        inputs=(
            TensorConfig(INPUT_NAME, "FP32", config_dims((n_features,), options.max_batch_size)),
        ),
        outputs=(TensorConfig(output, "FP32", config_dims((width,), options.max_batch_size)),),
        max_batch_size=options.max_batch_size,
        instance_kind=options.instance_kind,
        instance_count=options.instances,
        max_queue_delay_us=options.max_queue_delay_us,
    )
    return Artifact(
        name=name,
        model_filename="model.onnx",
        model_bytes=onnx_bytes,
        config=config,
        framework=framework,
        task="classification" if class_labels is not None else "regression",
        format="onnx",
        inputs=[
            TensorSpec(
                name=INPUT_NAME,
                datatype="FP32",
                shape=[-1, n_features],
                feature_names=feature_names,
                meaning="one row of features per sample",
            )
        ],
        outputs=[
            TensorSpec(
                name=output,
                datatype="FP32",
                shape=[-1, width],
                meaning=meaning,
                class_labels=class_labels,
            )
        ],
        parity=ParityCase(inputs={INPUT_NAME: sample}, compare=compare),
        framework_versions=framework_versions,
        parity_hint=parity_hint,
    )


def resolve_feature_names(
    n_features: int, from_model: list[str] | None, from_sample: list[str] | None
) -> list[str]:
    for names in (from_model, from_sample):
        if names is not None and len(names) == n_features:
            return [str(n) for n in names]
    return [f"f{i}" for i in range(n_features)]
