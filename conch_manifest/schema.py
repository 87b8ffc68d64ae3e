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
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from conch_manifest.names import ModelName

MANIFEST_FILENAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1

Framework = Literal["sklearn", "xgboost", "lightgbm", "pytorch", "recommender"]
Task = Literal["classification", "regression", "recommendation", "embedding", "other"]

# Tensor names a recommender model uses, natively and in the embedded Triton.
RECOMMENDER_INPUT = "USER_INDEX"  # INT64 [batch, 1]: row of the user in `user_ids`
RECOMMENDER_ITEMS = "ITEM_INDEX"  # INT64 [batch, max_k]: best first, indices into `item_ids`
RECOMMENDER_SCORES = "SCORE"  # FP32 [batch, max_k]: -inf marks "no more items"


class TensorSpec(BaseModel):
    name: str
    datatype: str  # Triton datatype: FP32, INT64, ...
    shape: list[int]  # including the batch axis as -1 when batched
    feature_names: list[str] | None = None
    meaning: str | None = None
    class_labels: list[str] | None = None


class RecommenderSpec(BaseModel):
    algorithm: str
    user_ids: list[str]  # index -> external user id
    item_ids: list[str]  # index -> external item id
    max_k: int  # items returned per user by the model (cutoffs above it are capped)


class ParityResult(BaseModel):
    passed: bool
    rows: int
    max_abs_diff: float | None = None  # numeric outputs
    tolerance: float | None = None
    topk_match_rate: float | None = None  # recommenders: share of users with identical top-K
    detail: str = ""


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
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
