"""One name rule for exporter and registry; manifest files never lead out of their model."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pydantic
import pytest
from typer.testing import CliRunner

from conch_manifest.layout import (
    ManifestFileOutsideModelError,
    manifest_path,
    model_directory,
    verify_files,
)
from conch_manifest.names import MAX_MODEL_NAME_LENGTH, check_model_name
from conch_manifest.schema import Manifest, ParityResult, sha256_file
from control_plane.registry.schemas import ModelRegister
from exporters.cli import app
from exporters.errors import ExportError
from exporters.repository import MAX_EXPORT_NAME_LENGTH, find_published, validate_name

BAD_NAMES = {
    "dotdot": "..",
    "parent": "../x",
    "hidden": ".hidden",
    "slash": "a/b",
    "backslash": "a\\b",
    "nul": "a\x00b",
    "inner-dotdot": "a..b",
    "trailing-dot": "a.",
    "leading-underscore": "_a",
    "space": "a b",
    "unicode": "modèle",
    "newline": "a\n",
    "empty": "",
    "too-long": "n" * (MAX_MODEL_NAME_LENGTH + 1),
}
GOOD_NAMES = ["iris", "iris-logreg", "ials.v2_final", "9lives", "A-B_c.d"]


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_exporter_and_registry_refuse_the_same_names(name: str) -> None:
    with pytest.raises(ExportError, match="invalid model name"):
        validate_name(name)
    with pytest.raises(pydantic.ValidationError, match="invalid model name"):
        ModelRegister(triton_name=name)
    with pytest.raises(FileNotFoundError):  # no path is even built for it
        model_directory(Path("/nonexistent-repository"), name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_exporter_and_registry_accept_the_same_names(name: str) -> None:
    assert validate_name(name) == name
    assert ModelRegister(triton_name=name).triton_name == name


def test_export_names_leave_room_for_the_content_hash() -> None:
    validate_name("n" * MAX_EXPORT_NAME_LENGTH)
    with pytest.raises(ExportError, match=f"{MAX_EXPORT_NAME_LENGTH} at most"):
        validate_name("n" * (MAX_EXPORT_NAME_LENGTH + 1))
    assert check_model_name("n" * MAX_MODEL_NAME_LENGTH)


def test_the_refusal_never_echoes_the_name() -> None:
    with pytest.raises(ValueError) as refused:
        check_model_name("secret\x00" * 40)
    assert "secret" not in str(refused.value)


def test_the_openapi_schema_carries_the_rule() -> None:
    schema = ModelRegister.model_json_schema()["properties"]["triton_name"]
    assert schema["maxLength"] == MAX_MODEL_NAME_LENGTH
    assert schema["pattern"].startswith("^[A-Za-z0-9]")


def test_cli_refuses_a_bad_name_before_exporting(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    args = ["sklearn", str(tmp_path / "model.joblib"), "--name", "../x"]
    result = CliRunner().invoke(app, [*args, "--repository", str(repository)])
    assert result.exit_code == 2, result.output
    assert "invalid model name" in result.output
    assert not repository.exists()


def _published(repository: Path, name: str, files: dict[str, str]) -> Path:
    """A model directory with one file and a manifest whose `files` are `files` (raw JSON,
    so that entries the Manifest model refuses can be written)."""
    root = repository / name
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.onnx").write_bytes(b"model")
    manifest = Manifest(
        name=name, triton_name=name, framework="sklearn", task="classification",
        format="onnx", backend="onnxruntime", created_at=datetime(2026, 1, 1, tzinfo=UTC),
        files={"1/model.onnx": sha256_file(root / "1" / "model.onnx")},
        inputs=[], outputs=[], max_batch_size=0, parity=ParityResult(passed=True, rows=0),
    )  # fmt: skip
    raw = manifest.model_dump(mode="json")
    raw["files"].update(files)
    manifest_path(repository, name).write_text(json.dumps(raw))
    return root


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("../outside.bin", "'..' component"),
        ("1/./model.onnx", "'.' or '..' component"),
        ("/etc/hostname", "absolute path"),
        ("C:/Windows/win.ini", "absolute path"),
        ("1\\model.onnx", "backslash"),
        ("1//model.onnx", "empty"),
    ],
)
def test_manifest_files_must_be_plain_relative_paths(
    tmp_path: Path, entry: str, reason: str
) -> None:
    (tmp_path / "outside.bin").write_bytes(b"outside")
    _published(tmp_path, "m", {entry: sha256_file(tmp_path / "outside.bin")})
    with pytest.raises(pydantic.ValidationError, match=reason):
        Manifest.model_validate_json(manifest_path(tmp_path, "m").read_bytes())
    with pytest.raises(ExportError, match="manifest is unreadable"):
        find_published(tmp_path, "m")


def test_a_symlink_out_of_the_model_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"outside")
    root = _published(tmp_path, "m", {"1/weights.bin": sha256_file(outside)})
    os.symlink(outside, root / "1" / "weights.bin")
    manifest = Manifest.model_validate_json(manifest_path(tmp_path, "m").read_bytes())
    with pytest.raises(ManifestFileOutsideModelError) as refused:
        verify_files(tmp_path, manifest)
    assert refused.value.files == ["1/weights.bin"]
    with pytest.raises(ExportError, match="files outside the model's directory"):
        find_published(tmp_path, "m")


def test_a_symlink_inside_the_model_is_fine(tmp_path: Path) -> None:
    root = _published(tmp_path, "m", {})
    os.symlink(root / "1" / "model.onnx", root / "1" / "alias.onnx")
    manifest = Manifest.model_validate_json(manifest_path(tmp_path, "m").read_bytes())
    manifest.files["1/alias.onnx"] = manifest.files["1/model.onnx"]
    assert verify_files(tmp_path, manifest) == []
