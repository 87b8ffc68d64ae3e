"""The manifest written beside every exported model: what it is and how to call it.

`model_repository/<triton_name>/manifest.json` is the contract between the
exporters (which write it) and the control plane (which registers the model and
reads its input schema and id maps from it). Only JSON is ever read back: no
pickle crosses this boundary.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema, field_validator

MANIFEST_FILENAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1

# --- model names: one rule for the exporters (which create the directory) and the
# registry (which reads it). Triton refuses '/' and '..' in a model name (core's
# ValidateModelName) and its repository scan skips hidden directories; Conch also
# keeps names portable: no quoting needed in a URL, a shell or a log line.
MAX_MODEL_NAME_LENGTH = 200  # the registry's column (control_plane/db/models.py)
MODEL_NAME_PATTERN = r"^[A-Za-z0-9](\.?[A-Za-z0-9_-])*$"
MODEL_NAME_RULE = (
    "ASCII letters, digits, '_', '-' and single dots, starting with a letter or digit "
    "and not ending with a dot"
)
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_.-]*")


class InvalidModelNameError(ValueError):
    pass


def model_name_problem(name: str, max_length: int = MAX_MODEL_NAME_LENGTH) -> str | None:
    """What makes `name` unusable as a model directory, None when it is fine."""
    if not name:
        return "it is empty"
    if len(name) > max_length:
        return f"it has {len(name)} characters, at most {max_length} are allowed"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if ".." in name:
        return "it contains '..'"
    if name.startswith("."):
        return "it starts with a dot (Triton ignores hidden directories)"
    if not _NAME_CHARACTERS.fullmatch(name):
        return "it contains a character other than ASCII letters, digits, '_', '-' and '.'"
    if not _MODEL_NAME.fullmatch(name):
        return "it must start with a letter or digit and not end with a dot"
    return None


def check_model_name(name: str, max_length: int = MAX_MODEL_NAME_LENGTH) -> str:
    """`name` unchanged, or InvalidModelNameError saying the rule (never echoing the name)."""
    problem = model_name_problem(name, max_length)
    if problem is not None:
        raise InvalidModelNameError(
            f"invalid model name: {problem}; use {MODEL_NAME_RULE} ({max_length} at most)"
        )
    return name


# A model repository directory name, as a pydantic type (manifests, request bodies).
ModelName = Annotated[
    str,
    AfterValidator(check_model_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_MODEL_NAME_LENGTH,
            "pattern": MODEL_NAME_PATTERN,
        }
    ),
]

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


class ManifestFileOutsideModelError(ValueError):
    """A `files` entry resolves (through a symbolic link) outside its model's directory."""

    def __init__(self, files: list[str]) -> None:
        super().__init__(f"files outside the model's directory: {', '.join(files)}")
        self.files = files


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


def model_directory(repository: Path, triton_name: str) -> Path:
    """repository/<triton_name>. A name that could point elsewhere ('..', 'a/b') names no
    model: it is reported absent without touching the filesystem, whoever asks."""
    if model_name_problem(triton_name) is not None:
        raise FileNotFoundError(errno.ENOENT, "no model of that name in the repository")
    return repository / triton_name


def manifest_path(repository: Path, triton_name: str) -> Path:
    return model_directory(repository, triton_name) / MANIFEST_FILENAME


def load_manifest(repository: Path, triton_name: str) -> Manifest:
    return Manifest.model_validate_json(manifest_path(repository, triton_name).read_bytes())


def verify_files(repository: Path, manifest: Manifest) -> list[str]:
    """Relative paths whose content no longer matches the manifest (empty when intact).

    Raises ManifestFileOutsideModelError when an entry leads out of the model's
    directory through a symbolic link: nothing outside it is ever read."""
    root = model_directory(repository, manifest.triton_name)
    real_root = root.resolve()
    outside = [
        relative
        for relative in manifest.files
        if not (root / relative).resolve().is_relative_to(real_root)
    ]
    if outside:
        raise ManifestFileOutsideModelError(outside)
    bad = []
    for relative, expected in manifest.files.items():
        path = root / relative
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(relative)
    return bad
