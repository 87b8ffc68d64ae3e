"""What the tabular exporters (sklearn, xgboost, lightgbm) share.

Their ONNX graphs all take one FP32 matrix `input` [batch, n_features] and give
either `probabilities` [batch, n_classes] or `variable` [batch, 1]. scikit-learn
text pipelines (exporters/text.py) give the same outputs from a BYTES `input`
[batch, 1] instead: `ModelInput` is the part that differs.
"""

from __future__ import annotations

import csv
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Unpack

import numpy as np

from conch_manifest.schema import ClassLabel, Framework, TensorSpec, encode_labels
from exporters import parity
from exporters.arrays import Array
from exporters.config import TensorConfig
from exporters.errors import ExportError
from exporters.pipeline import (
    Artifact,
    ExportResult,
    ExportTarget,
    ParityCase,
    ServingOptions,
    config_dims,
    run_export,
)

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
REGRESSION_OUTPUT = "variable"
# skl2onnx/onnxmltools support up to these opsets; onnxruntime runs both.
ONNX_OPSET = 15
ONNX_ML_OPSET = 3

BoosterKind = Literal["binary", "multiclass", "regression"]


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


class TabularSource(ABC):
    """One loaded tabular model; a framework module implements the parts that differ.

    Loading happens in the constructor, inside the convert step.
    """

    framework: ClassVar[Framework]
    parity_hint: ClassVar[str] = ""  # appended to a parity failure
    version_modules: ClassVar[dict[str, str]]  # package name -> module, for the manifest

    n_features: int  # set by the constructor

    def feature_names(self) -> list[str] | None:
        """The names the model was trained with, when it kept them."""
        return None

    @abstractmethod
    def predict(self, rows: Array) -> tuple[list[ClassLabel] | None, Array]:
        """Class labels in the model's own type (None for a regressor) and the framework's
        own predictions."""

    @abstractmethod
    def to_onnx(self) -> Any:
        """The converted ONNX ModelProto."""

    def versions(self) -> dict[str, str]:
        return {
            package: importlib.import_module(module).__version__
            for package, module in self.version_modules.items()
        }


class TabularExport(Protocol):
    """`export_sklearn`, `export_xgboost`, `export_lightgbm`: `feature_names` overrides the
    model's own and the CSV header's; the parity rows are `sample`, compared within
    `atol` + `rtol` * |source| (defaults in exporters/parity.py)."""

    def __call__(
        self,
        model_path: Path,
        *,
        sample: Array | Path,
        feature_names: list[str] | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        **target: Unpack[ExportTarget],
    ) -> ExportResult: ...


def tabular_exporter(load: Callable[[Path], TabularSource]) -> TabularExport:
    """The export function of one tabular framework: its loader, then the shared steps."""

    def export(
        model_path: Path,
        *,
        sample: Array | Path,
        feature_names: list[str] | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        **target: Unpack[ExportTarget],
    ) -> ExportResult:
        return run_export(
            lambda name, options: convert_tabular(
                load(model_path), name, options, sample, feature_names, atol, rtol
            ),
            **target,
        )

    return export


def convert_tabular(
    source: TabularSource,
    name: str,
    options: ServingOptions,
    sample: Array | Path,
    feature_names: list[str] | None,
    atol: float | None,
    rtol: float | None,
) -> Artifact:
    rows, header = load_sample(sample) if isinstance(sample, Path) else (sample, None)
    rows = check_sample(np.asarray(rows, dtype=np.float32), source.n_features)
    class_labels, expected = source.predict(rows)
    onnx_model = source.to_onnx()
    if feature_names is None:
        names = resolve_feature_names(source.n_features, source.feature_names(), header)
    elif len(feature_names) != source.n_features:
        raise ExportError(f"{len(feature_names)} feature names for {source.n_features} features")
    else:
        names = feature_names
    return tabular_artifact(
        name=name,
        framework=source.framework,
        onnx_bytes=onnx_bytes(onnx_model),
        model_input=features_input(names),
        class_labels=class_labels,
        sample=rows,
        expected=np.asarray(expected),
        atol=atol,
        rtol=rtol,
        options=options,
        framework_versions=source.versions(),
        parity_hint=source.parity_hint,
    )


def native_labels(classes: Any) -> list[ClassLabel]:
    """A model's `classes_` as Python values of their own type (numpy int64 -> int, ...);
    anything that is not a bool, number or string is labelled by its text."""
    labels: list[ClassLabel] = []
    for value in np.asarray(classes).tolist():  # numpy scalars -> Python scalars
        labels.append(value if isinstance(value, bool | int | float | str) else str(value))
    return labels


def booster_outputs(kind: BoosterKind, predictions: Array) -> tuple[list[ClassLabel] | None, Array]:
    """Class labels and expected output from a tree booster's raw predictions: a binary
    booster predicts P(class 1) only, the exported graph both columns. Boosters number
    their classes 0..n-1, so the labels are those integers."""
    if kind == "binary":
        return [0, 1], np.stack([1.0 - predictions, predictions], axis=1)
    if kind == "multiclass":
        return list(range(predictions.shape[1])), predictions
    return None, predictions


def onnxmltools_convert(
    converter: Callable[..., Any], label: str, booster: Any, n_features: int, **extra: Any
) -> Any:
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        return converter(
            booster,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=ONNX_OPSET,
            **extra,
        )
    except Exception as exc:  # onnxmltools raises many types for unsupported boosters
        raise ExportError(f"onnxmltools could not convert the {label} model: {exc}") from exc


def tabular_artifact(
    *,
    name: str,
    framework: Framework,
    onnx_bytes: bytes,
    model_input: ModelInput,
    class_labels: list[ClassLabel] | None,
    sample: Array,
    expected: Array,
    atol: float | None,
    rtol: float | None,
    options: ServingOptions,
    framework_versions: dict[str, str],
    parity_hint: str = "",
) -> Artifact:
    """An Artifact for a classifier (class_labels given) or a regressor."""
    label_text, label_type = encode_labels(class_labels) if class_labels else (None, None)
    if class_labels is not None:
        output = PROBABILITIES
        width = len(class_labels)
        meaning = "probability of each class, columns in class_labels order"
        compare = parity.numeric({output: expected}, atol, rtol)
    else:
        output = REGRESSION_OUTPUT
        width = 1
        meaning = "predicted value"
        compare = parity.numeric({output: expected.reshape(-1, 1)}, atol, rtol)
    mbs = options.max_batch_size
    config = options.config(
        name,
        "onnxruntime",
        inputs=(model_input.config(mbs),),
        outputs=(TensorConfig(output, "FP32", config_dims((width,), mbs)),),
    )
    return Artifact(
        name=name,
        model_filename="model.onnx",
        model_bytes=onnx_bytes,
        config=config,
        framework=framework,
        task="classification" if class_labels is not None else "regression",
        format="onnx",
        inputs=[model_input.spec],
        outputs=[
            TensorSpec(
                name=output,
                datatype="FP32",
                shape=[-1, width],
                meaning=meaning,
                class_labels=label_text,
                class_label_type=label_type,
            )
        ],
        parity=ParityCase(inputs={INPUT_NAME: sample}, compare=compare),
        framework_versions=framework_versions,
        parity_hint=parity_hint,
    )


@dataclass(frozen=True)
class ModelInput:
    """The one input tensor: its manifest entry (shape with the batch axis as -1)."""

    spec: TensorSpec

    def config(self, max_batch_size: int) -> TensorConfig:
        per_sample = tuple(self.spec.shape[1:])
        return TensorConfig(
            self.spec.name, self.spec.datatype, config_dims(per_sample, max_batch_size)
        )


def features_input(feature_names: list[str]) -> ModelInput:
    return ModelInput(
        TensorSpec(
            name=INPUT_NAME,
            datatype="FP32",
            shape=[-1, len(feature_names)],
            feature_names=feature_names,
            meaning="one row of features per sample",
        )
    )


def resolve_feature_names(
    n_features: int, from_model: list[str] | None, from_sample: list[str] | None
) -> list[str]:
    for names in (from_model, from_sample):
        if names is not None and len(names) == n_features:
            return [str(n) for n in names]
    return [f"f{i}" for i in range(n_features)]
