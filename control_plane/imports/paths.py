"""Which file an import may read: inside the import directory, after every link is followed.

The caller names a path; it is resolved (symlinks and `..` included) and must lie
inside the resolved import directory, so neither `../../etc/passwd` nor a link
planted in the directory reads anything else. Refusals quote the path as the
caller sent it, never the server's absolute paths.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from control_plane.core.errors import (
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)

# model_type -> whether every file of that type is a pickle; the others are pickles
# only by suffix (a booster saved with joblib).
SAFE_TYPES = ("onnx", "xgboost", "lightgbm", "torchscript")
PICKLE_ONLY_TYPES = ("sklearn",)
SUPPORTED_TYPES = (*SAFE_TYPES, *PICKLE_ONLY_TYPES)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")  # as exporters/file_import.py
PICKLE_SETTING = "CONCH_ALLOW_PICKLE_IMPORT"


@dataclass(frozen=True)
class ImportSource:
    path: Path  # resolved, inside the import directory
    shown: str  # as the caller sent it: what responses and errors quote
    relative: str  # relative to the import directory: what the audit log records
    size_bytes: int


def check_model_type(model_type: str) -> str:
    if model_type not in SUPPORTED_TYPES:
        raise ValidationError(
            f"model_type {model_type[:40]!r} is not supported; use one of "
            f"{', '.join(SUPPORTED_TYPES)}",
            model_type=model_type[:40],
            supported=list(SUPPORTED_TYPES),
        )
    return model_type


def unpickles(model_type: str, path: Path) -> bool:
    return model_type in PICKLE_ONLY_TYPES or path.suffix.lower() in PICKLE_SUFFIXES


def check_pickle_allowed(model_type: str, path: Path, allowed: bool, shown: str) -> None:
    if unpickles(model_type, path) and not allowed:
        raise PermissionDeniedError(
            f"{shown!r} is a pickle: loading it runs code stored in it, and "
            f"{PICKLE_SETTING} is not true on this server; export the model to ONNX, XGBoost "
            "JSON/UBJ or LightGBM text, or ask the operator to set it",
            model_path=shown,
            setting=PICKLE_SETTING,
        )


def resolve_source(import_dir: Path, given: str) -> ImportSource:
    """The file `given` names (relative to the import directory, or absolute inside it)."""
    if "\x00" in given:
        raise BadRequestError("model_path holds a NUL byte")
    try:
        root = import_dir.resolve(strict=True)
    except OSError:
        raise PermissionDeniedError(
            "model import is not available: the import directory does not exist"
        ) from None
    candidate = Path(given)
    candidate = candidate if candidate.is_absolute() else root / candidate
    outside = PermissionDeniedError(
        f"{given!r} is outside the import directory; place the file there and name it "
        "relative to it",
        model_path=given,
    )
    # Outside is refused before existence is looked at: no probing for files elsewhere.
    if not _inside(candidate.resolve(strict=False), root):
        raise outside
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(
            f"model file {given!r} not found in the import directory", model_path=given
        ) from None
    except (OSError, RuntimeError):  # a link loop, a permission problem
        raise NotFoundError(f"model file {given!r} cannot be read", model_path=given) from None
    if not _inside(resolved, root):  # a link that changed between the two looks
        raise outside
    try:
        info = resolved.stat()
    except OSError:
        raise NotFoundError(f"model file {given!r} cannot be read", model_path=given) from None
    if not stat.S_ISREG(info.st_mode):
        raise ValidationError(f"{given!r} is not a regular file", model_path=given)
    return ImportSource(resolved, given, resolved.relative_to(root).as_posix(), info.st_size)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def copy_source(source: ImportSource, target_dir: Path) -> Path:
    """A private copy for the exporter, made from the file that was checked: the open
    file must be the inode resolved above, so a link swapped in since reads nothing."""
    target = target_dir / source.path.name  # exporters quote and check the name
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(source.path, flags)
    except OSError:
        raise NotFoundError(
            f"model file {source.shown!r} cannot be read", model_path=source.shown
        ) from None
    with os.fdopen(descriptor, "rb") as handle:
        opened, checked = os.fstat(handle.fileno()), source.path.stat()
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
            raise PermissionDeniedError(
                f"{source.shown!r} changed while it was being imported", model_path=source.shown
            )
        with target.open("wb") as out:
            shutil.copyfileobj(handle, out, 1 << 20)
    return target
