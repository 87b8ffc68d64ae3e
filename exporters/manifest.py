"""The manifest written beside every exported model: what it is and how to call it.

`model_repository/<triton_name>/manifest.json` is the contract between the
exporters (which write it) and the control plane (which registers the model and
reads its input schema and id maps from it). Only JSON is ever read back: no
pickle crosses this boundary.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

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
    triton_name: str  # immutable repository directory name
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


def manifest_path(repository: Path, triton_name: str) -> Path:
    return repository / triton_name / MANIFEST_FILENAME


def load_manifest(repository: Path, triton_name: str) -> Manifest:
    return Manifest.model_validate_json(manifest_path(repository, triton_name).read_bytes())


def verify_files(repository: Path, manifest: Manifest) -> list[str]:
    """Relative paths whose content no longer matches the manifest (empty when intact)."""
    root = repository / manifest.triton_name
    bad = []
    for relative, expected in manifest.files.items():
        path = root / relative
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(relative)
    return bad
