"""The manifest written beside every exported model: what it is and how to call it.

`model_repository/<triton_name>/manifest.json` is the contract between the
exporters (which write it) and the control plane (which registers the model and
reads its input schema and id maps from it). Only JSON is ever read back: no
pickle crosses this boundary.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from conch_manifest.names import ModelName

MANIFEST_FILENAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1

Framework = Literal["sklearn", "xgboost", "lightgbm", "pytorch", "recommender", "onnx"]
Task = Literal["classification", "regression", "recommendation", "embedding", "other"]

# Tensor names a recommender model uses, natively and in the embedded Triton.
RECOMMENDER_INPUT = "USER_INDEX"  # INT64 [batch, 1]: row of the user in `user_ids`
RECOMMENDER_ITEMS = "ITEM_INDEX"  # INT64 [batch, max_k]: best first, indices into `item_ids`
RECOMMENDER_SCORES = "SCORE"  # FP32 [batch, max_k]: -inf marks "no more items"


# A class label in the source model's own type (scikit-learn's `classes_`), as the
# prediction API answers it. The manifest keeps labels as text plus their type, so
# a reader that predates the type still reads every manifest.
ClassLabel = bool | int | float | str
LabelType = Literal["int", "float", "str", "bool"]
_BOOL_TEXT = {"true": True, "false": False}


def label_type_of(labels: Sequence[ClassLabel]) -> LabelType:
    """The one type that holds every label: bool, int, float (ints and floats mixed), else str."""
    if labels and all(isinstance(label, bool) for label in labels):
        return "bool"
    if not labels or any(isinstance(label, bool | str) for label in labels):
        return "str"
    return "int" if all(isinstance(label, int) for label in labels) else "float"


def encode_labels(labels: Sequence[ClassLabel]) -> tuple[list[str], LabelType]:
    """Labels as the manifest stores them: text, and the type to read them back in."""
    kind = label_type_of(labels)
    if kind == "bool":
        return ["true" if label else "false" for label in labels], kind
    if kind == "float":
        return [repr(float(label)) for label in labels], kind
    return [str(label) for label in labels], kind


def decode_label(text: str, kind: LabelType) -> ClassLabel:
    """One stored label in its type; ValueError when the text is not of that type."""
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        if text.lower() not in _BOOL_TEXT:
            raise ValueError(f"{text!r} is not true or false")
        return _BOOL_TEXT[text.lower()]
    return text


class TensorSpec(BaseModel):
    name: str
    datatype: str  # Triton datatype: FP32, INT64, ...
    shape: list[int]  # including the batch axis as -1 when batched
    feature_names: list[str] | None = None
    meaning: str | None = None
    class_labels: list[str] | None = None  # as text; `class_label_type` says how to read them
    class_label_type: LabelType | None = None  # None (manifests before it): str

    @model_validator(mode="after")
    def _labels_read_as_their_type(self) -> Self:
        self.typed_class_labels()  # raises ValueError for a label not of the declared type
        return self

    def typed_class_labels(self) -> list[ClassLabel] | None:
        """The labels in the source model's own type: 1, not "1", for integer classes."""
        if self.class_labels is None:
            return None
        kind = self.class_label_type or "str"
        try:
            return [decode_label(text, kind) for text in self.class_labels]
        except ValueError as exc:
            raise ValueError(f"class_labels of {self.name!r} are not all {kind}: {exc}") from None


class RecommenderSpec(BaseModel):
    algorithm: str
    user_ids: list[str]  # index -> external user id
    item_ids: list[str]  # index -> external item id
    max_k: int  # items returned per user by the model (cutoffs above it are capped)


class ParityResult(BaseModel):
    passed: bool
    rows: int
    max_abs_diff: float | None = None  # numeric outputs
    tolerance: float | None = None  # absolute (atol); for recommenders the tied-score bound
    relative_tolerance: float | None = None  # rtol: |triton - source| <= atol + rtol * |source|
    topk_match_rate: float | None = None  # recommenders: share of users with identical top-K
    detail: str = ""


class GraphOptimization(BaseModel):
    """The offline graph optimization an export applied (`conch export --optimize`, the
    import's `compile_model`): the published model file is the optimized graph, and the
    parity check ran on it (exporters/onnx_optimize.py)."""

    tool: Literal["onnxruntime"] = "onnxruntime"  # its version is in framework_versions
    level: Literal["basic"] = "basic"  # onnxruntime's level: the one portable across providers
    nodes_before: int
    nodes_after: int


class Manifest(BaseModel):
    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str  # user-facing name (e.g. "iris-logreg")
    triton_name: ModelName  # immutable repository directory name
    version: int = 1
    framework: Framework
    task: Task
    format: Literal["onnx", "torchscript"]
    backend: str  # config.pbtxt backend: onnxruntime | pytorch
    framework_versions: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    files: dict[str, str]  # relative path -> sha256 of every file but the manifest
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    recommender: RecommenderSpec | None = None
    parity: ParityResult
    optimization: GraphOptimization | None = None  # None: the model file is as converted

    @field_validator("files")
    @classmethod
    def _files_inside_the_model(cls, files: dict[str, str]) -> dict[str, str]:
        for relative in files:
            problem = _relative_path_problem(relative)
            if problem is not None:
                raise ValueError(f"files entry {relative[:100]!r} {problem}")
        return files


def _relative_path_problem(relative: str) -> str | None:
    """Why a `files` key is not a plain relative POSIX path inside the model directory."""
    if not relative or "\x00" in relative or "\\" in relative:
        return "is empty or holds a NUL byte or a backslash"
    path = PurePosixPath(relative)
    if path.is_absolute() or re.match(r"[A-Za-z]:(/|$)", relative):  # or a drive letter
        return "is an absolute path"
    if any(part in ("", ".", "..") for part in relative.split("/")):
        return "has an empty, '.' or '..' component"
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# What makes two manifests describe the same model. The rest (created_at, tool
# versions, the parity report) changes when the same files are exported again.
_IDENTITY_FIELDS = {
    "triton_name", "version", "framework", "task", "format", "backend",
    "files", "inputs", "outputs", "max_batch_size", "recommender",
}  # fmt: skip


def content_digest(manifest: Manifest) -> str:
    """SHA-256 of the fields that identify the served model, stable across re-exports."""
    identity = manifest.model_dump(mode="json", include=_IDENTITY_FIELDS)
    # A manifest written before `class_label_type` existed keeps the digest it had.
    for tensor in (*identity["inputs"], *identity["outputs"]):
        if tensor.get("class_label_type") is None:
            tensor.pop("class_label_type", None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
