"""Atomic, immutable entries in the Triton model repository.

An export is assembled in a staging directory inside the repository root (a
dot-prefixed name, which Triton's repository scan ignores), model file first
and config.pbtxt last, then moved into place with one `os.rename`: Triton and
the control plane see either no model or a complete one, never half of it.
Names are content-addressed (`<name>-<sha256 prefix of the model file>`), so a
published directory never changes; exporting the same model again is a no-op.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from pydantic import ValidationError

from conch_manifest.layout import ManifestFileOutsideModelError, load_manifest, verify_files
from conch_manifest.names import InvalidModelNameError, check_model_name
from conch_manifest.schema import MANIFEST_FILENAME, Manifest, sha256_file
from exporters.errors import ExportError

MODEL_VERSION = "1"
STAGING_PREFIX = ".conch-staging-"
# The Triton name adds "-" and 10 hex digits of content hash; the registry allows 200.
MAX_EXPORT_NAME_LENGTH = 100


def validate_name(name: str) -> str:
    """The registry's rule (conch_manifest/names.py), so every export can be registered."""
    try:
        return check_model_name(name, max_length=MAX_EXPORT_NAME_LENGTH)
    except InvalidModelNameError as exc:
        raise ExportError(f"{exc} (got {name[:120]!r})") from None


def triton_name_for(name: str, model_bytes: bytes) -> str:
    return f"{validate_name(name)}-{hashlib.sha256(model_bytes).hexdigest()[:10]}"


def find_published(repository: Path, triton_name: str) -> Manifest | None:
    """The manifest of an intact published model, None when absent.

    A directory that exists but does not verify is never overwritten: someone
    must look at it, so the export is refused.
    """
    if not (repository / triton_name).exists():
        return None
    try:
        manifest = load_manifest(repository, triton_name)
    except (OSError, ValidationError, ValueError) as exc:
        raise ExportError(
            f"{repository / triton_name} exists but its manifest is unreadable ({exc}); "
            "refusing to overwrite it"
        ) from exc
    try:
        bad = verify_files(repository, manifest)
    except ManifestFileOutsideModelError as exc:
        raise ExportError(
            f"{repository / triton_name} exists but its manifest lists {exc}; "
            "refusing to overwrite it"
        ) from exc
    if bad:
        raise ExportError(
            f"{repository / triton_name} exists but {', '.join(bad)} no longer match its "
            "manifest; refusing to overwrite it"
        )
    return manifest


class StagingArea:
    """A dot-prefixed directory inside the repository where exports are assembled.

    It doubles as the model repository of the private parity Triton, so a staged
    model is served exactly as it will be published.
    """

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self.repository.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.repository))
        return self._root

    def model_dir(self, triton_name: str) -> Path:
        return self.root / triton_name

    def write_model(self, triton_name: str, filename: str, data: bytes) -> None:
        version_dir = self.model_dir(triton_name) / MODEL_VERSION
        version_dir.mkdir(parents=True)
        _write_synced(version_dir / filename, data)

    def write_config(self, triton_name: str, text: str) -> None:
        _write_synced(self.model_dir(triton_name) / "config.pbtxt", text.encode())

    def write_manifest(self, manifest: Manifest) -> None:
        path = self.model_dir(manifest.triton_name) / MANIFEST_FILENAME
        _write_synced(path, manifest.model_dump_json(indent=2).encode())

    def publish(self, triton_name: str) -> Path:
        target = self.repository / triton_name
        try:
            # rename(2) refuses to replace a non-empty directory: never an overwrite.
            os.rename(self.model_dir(triton_name), target)
        except OSError as exc:
            raise ExportError(f"could not publish {target}: {exc.strerror}") from exc
        return target

    def discard(self, triton_name: str) -> None:
        if self._root is not None:
            shutil.rmtree(self.model_dir(triton_name), ignore_errors=True)

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def staged_files(model_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file in a staged model, the manifest excluded."""
    return {
        path.relative_to(model_dir).as_posix(): sha256_file(path)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILENAME
    }


def _write_synced(path: Path, data: bytes) -> None:
    # fsync before the rename publishes it: a crash must not leave a renamed
    # directory whose files are still empty.
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
