"""The steps every export shares: write, parity check, publish.

A framework module converts its model into an `Artifact` (bytes + config +
manifest fields + a parity case); `publish_artifact` does the rest, the same
way for every framework.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from conch_manifest.schema import Framework, Manifest, RecommenderSpec, Task, TensorSpec
from exporters.arrays import Array
from exporters.config import InstanceKind, ModelConfigSpec, render_config
from exporters.errors import ExportError
from exporters.parity import Comparator
from exporters.repository import find_published, staged_files, triton_name_for
from exporters.session import ExportSession

# Called with the name of each step as it starts: convert, write, parity, publish.
ProgressHook = Callable[[str], None]


def no_progress(step: str) -> None:
    """The default hook: library callers need no display."""


@dataclass(frozen=True)
class ServingOptions:
    """How Triton serves the model; the CLI exposes each field as an option."""

    max_batch_size: int = 64
    instance_kind: InstanceKind = "cpu"
    instances: int = 1
    max_queue_delay_us: int = 100


@dataclass
class ParityCase:
    inputs: dict[str, Array]  # held-out rows, already in the model's input dtypes
    compare: Comparator  # closes over the source framework's own predictions


@dataclass
class Artifact:
    name: str
    model_filename: str
    model_bytes: bytes
    config: ModelConfigSpec  # its name is replaced by the content-addressed one
    framework: Framework
    task: Task
    format: Literal["onnx", "torchscript"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parity: ParityCase
    framework_versions: dict[str, str] = field(default_factory=dict)
    recommender: RecommenderSpec | None = None
    parity_hint: str = ""  # appended to a parity failure: the usual cause for this framework


@dataclass(frozen=True)
class ExportResult:
    triton_name: str
    path: Path
    manifest: Manifest
    reused: bool  # True when an identical model was already published


@contextmanager
def session_scope(repository: Path, session: ExportSession | None) -> Iterator[ExportSession]:
    """The caller's session when given (several exports share one Triton), else a private one."""
    if session is not None:
        if session.repository != repository.resolve():
            raise ExportError(
                f"the export session serves {session.repository}, not {repository.resolve()}"
            )
        yield session
        return
    with ExportSession(repository) as own:
        yield own


def publish_artifact(
    artifact: Artifact, session: ExportSession, progress: ProgressHook = no_progress
) -> ExportResult:
    repository = session.repository
    triton_name = triton_name_for(artifact.name, artifact.model_bytes)
    config = artifact.config.with_name(triton_name)
    config_text = render_config(config)
    existing = find_published(repository, triton_name)
    if existing is not None:
        # Same model bytes, same name: only the serving options could differ, and a
        # published entry never changes, so asking for other options is an error.
        if (repository / triton_name / "config.pbtxt").read_text() != config_text:
            raise ExportError(
                f"{triton_name} is already published with other serving options "
                "(config.pbtxt differs); export under another --name to serve it differently"
            )
        return ExportResult(triton_name, repository / triton_name, existing, reused=True)

    staging = session.staging
    try:
        progress("write")
        staging.write_model(triton_name, artifact.model_filename, artifact.model_bytes)
        staging.write_config(triton_name, config_text)  # last: Triton keys on it

        progress("parity")
        output_names = [tensor.name for tensor in config.outputs]
        actual = session.infer(
            triton_name, artifact.parity.inputs, output_names, config.max_batch_size
        )
        parity = artifact.parity.compare(actual)
        if not parity.passed:
            raise ExportError(f"parity check failed: {parity.detail}{artifact.parity_hint}")

        progress("publish")
        manifest = Manifest(
            name=artifact.name,
            triton_name=triton_name,
            framework=artifact.framework,
            task=artifact.task,
            format=artifact.format,
            backend=config.backend,
            framework_versions=artifact.framework_versions,
            created_at=datetime.now(UTC),
            files=staged_files(staging.model_dir(triton_name)),
            inputs=artifact.inputs,
            outputs=artifact.outputs,
            max_batch_size=config.max_batch_size,
            recommender=artifact.recommender,
            parity=parity,
        )
        staging.write_manifest(manifest)
        # A concurrent export of the same model may have published first: same content.
        winner = find_published(repository, triton_name)
        if winner is not None:
            staging.discard(triton_name)
            return ExportResult(triton_name, repository / triton_name, winner, reused=True)
        path = staging.publish(triton_name)
    except BaseException:
        staging.discard(triton_name)
        raise
    return ExportResult(triton_name, path, manifest, reused=False)


def config_dims(per_sample: tuple[int, ...], max_batch_size: int) -> tuple[int, ...]:
    """config.pbtxt dims: without the batch axis when Triton batches, with -1 otherwise."""
    return per_sample if max_batch_size > 0 else (-1, *per_sample)
