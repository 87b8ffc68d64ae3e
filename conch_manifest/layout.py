"""Where a model lives in the repository, and whether its files are still what its
manifest says. Nothing outside a model's own directory is ever read."""

from __future__ import annotations

import errno
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
