"""What the control plane knows about one registered model, read once from its manifest.

Registered models are immutable (ids are never reused), so a handle never goes
stale; only its model can leave the registry (`catalog.py` handles that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np

from conch_manifest.schema import (
    RECOMMENDER_INPUT,
    RECOMMENDER_ITEMS,
    RECOMMENDER_SCORES,
    ClassLabel,
    Manifest,
    TensorSpec,
)
from control_plane.core.errors import BadRequestError
from control_plane.db.models import Model


@dataclass(frozen=True)
class RecommenderIndex:
    """A recommender's id maps: external user ids in, external item ids out."""

    user_index: dict[str, int]  # external user id -> row
    item_ids: list[str]  # column -> external item id
    max_k: int
    input_name: str = RECOMMENDER_INPUT
    items_output: str = RECOMMENDER_ITEMS
    scores_output: str = RECOMMENDER_SCORES


# Triton datatypes of numeric inputs -> the numpy type their rows are sent as.
NUMPY_TYPES: dict[str, type[np.generic]] = {
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "BOOL": np.bool_,
}  # fmt: skip


@dataclass(frozen=True)
class InputLayout:
    """How a caller's rows become one input tensor (`inputs.py`), from its manifest spec."""

    name: str
    datatype: str
    dtype: np.dtype[np.generic] | None  # None for BYTES (strings)
    row_shape: tuple[int, ...]  # one row's shape, batch axis removed; -1: any length
    feature_names: (
        tuple[str, ...] | None
    )  # one per value of a 1-D row, when the manifest names them
    fields: tuple[str, ...]  # a record's keys for this input: its feature names, else its name

    @property
    def width(self) -> int | None:
        """Values per row of a 1-D row (None for a variable or multi-dimensional row)."""
        if len(self.row_shape) == 1 and self.row_shape[0] >= 0:
            return self.row_shape[0]
        return None

    def feature(self, column: int) -> str:
        """What an error calls one column: its feature name, else its input and index."""
        if self.feature_names is not None and column < len(self.feature_names):
            return self.feature_names[column]
        return f"{self.name}[{column}]"


def input_layout(spec: TensorSpec) -> InputLayout:
    shape = tuple(spec.shape)
    # The manifest writes the batch axis as a leading -1; a row is the rest.
    row_shape = shape[1:] if shape and shape[0] == -1 else shape
    names = spec.feature_names
    named = names is not None and len(row_shape) == 1 and row_shape[0] in (len(names), -1)
    feature_names = tuple(names) if named and names is not None else None
    numeric = NUMPY_TYPES.get(spec.datatype)
    return InputLayout(
        name=spec.name,
        datatype=spec.datatype,
        dtype=np.dtype(numeric) if numeric is not None else None,
        row_shape=row_shape,
        feature_names=feature_names,
        fields=feature_names if feature_names is not None else (spec.name,),
    )


@dataclass(frozen=True)
class ModelHandle:
    model_id: int
    name: str  # the registered (user-facing) name
    triton_name: str
    framework: str
    task: str
    created_at: datetime
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    class_labels: list[ClassLabel] | None  # in the model's own type: 1, not "1"
    max_batch_size: int  # Triton refuses larger requests: callers split by it (0: no batch axis)
    recommender: RecommenderIndex | None

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    @cached_property
    def input_layouts(self) -> tuple[InputLayout, ...]:
        """Computed once per handle: every request's input validation reads it."""
        return tuple(input_layout(spec) for spec in self.inputs)

    def as_recommender(self) -> RecommenderIndex:
        """The id maps, or a 400 for a model that is not a recommender."""
        if self.recommender is None:
            raise BadRequestError(
                f"model {self.model_id} is a {self.task} model, not a recommender; "
                "send feature rows to /api/inference/predict",
                model_id=self.model_id,
                task=self.task,
            )
        return self.recommender


def build_handle(model: Model, manifest: Manifest) -> ModelHandle:
    spec = manifest.recommender
    recommender = None
    if spec is not None:
        recommender = RecommenderIndex(
            user_index={user: row for row, user in enumerate(spec.user_ids)},
            item_ids=list(spec.item_ids),
            max_k=spec.max_k,
        )
    labels = next((o.typed_class_labels() for o in manifest.outputs if o.class_labels), None)
    return ModelHandle(
        model_id=model.id,
        name=model.name,
        triton_name=model.triton_name,
        framework=manifest.framework,
        task=manifest.task,
        created_at=model.created_at,
        inputs=tuple(manifest.inputs),
        outputs=tuple(manifest.outputs),
        class_labels=labels,
        max_batch_size=manifest.max_batch_size,
        recommender=recommender,
    )
