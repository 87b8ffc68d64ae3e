"""Where a model lives in the repository, and whether its files are still what its
manifest says. Nothing outside a model's own directory is ever read."""

from __future__ import annotations

import errno
import re
from datetime import UTC, datetime
from pathlib import Path

from conch_manifest.names import model_name_problem
from conch_manifest.schema import MANIFEST_FILENAME, Manifest, sha256_file


class ManifestFileOutsideModelError(ValueError):
    """A `files` entry resolves (through a symbolic link) outside its model's directory."""

    def __init__(self, files: list[str]) -> None:
        super().__init__(f"files outside the model's directory: {', '.join(files)}")
        self.files = files


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


def newest_export(repository: Path, name: str) -> str | None:
    """The triton_name of the newest export of `name` (by its manifest's created_at),
    None when there is none. Exports are published as `<name>-<10 hex digits>`
    (exporters.repository.triton_name_for); a directory whose manifest is unreadable
    or names another model is not an export of `name`."""
    if model_name_problem(name) is not None or not repository.is_dir():
        return None
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{10}")
    newest: tuple[datetime, str] | None = None
    for entry in repository.iterdir():
        if not pattern.fullmatch(entry.name) or not entry.is_dir():
            continue
        try:
            manifest = load_manifest(repository, entry.name)
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            continue
        if manifest.name != name or manifest.triton_name != entry.name:
            continue
        created = manifest.created_at
        if created.tzinfo is None:  # compare naive and aware stamps: naive means UTC
            created = created.replace(tzinfo=UTC)
        candidate = (created, entry.name)
        if newest is None or candidate > newest:
            newest = candidate
    return None if newest is None else newest[1]
