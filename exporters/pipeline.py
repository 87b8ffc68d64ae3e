"""The export pipeline as explicit steps: convert -> transforms -> write -> parity -> publish.

A framework module supplies only its convert step: a function from the export's
name and serving options to an `Artifact` (bytes + config + manifest fields + a
parity case). `run_export` runs it, then any transforms (quantization, graph
optimization, a TensorRT plan: each takes and returns the artifact), then the
steps every framework shares, and reports each step's status and duration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, Required, TypedDict

from conch_manifest.schema import (
    Framework,
    GraphOptimization,
    Manifest,
    RecommenderSpec,
    Task,
    TensorSpec,
)
from exporters.arrays import Array
from exporters.config import InstanceKind, ModelConfigSpec, TensorConfig, render_config
from exporters.errors import ExportError, PublishedDifferentlyError
from exporters.parity import Comparator
from exporters.repository import find_published, staged_files, triton_name_for
from exporters.session import ExportSession
from exporters.steps import ProgressHook, StepLog, StepRecord, no_progress

__all__ = ["ProgressHook", "StepRecord", "no_progress"]  # re-exported for callers


@dataclass(frozen=True)
class ServingOptions:
    """How Triton serves the model; the CLI exposes each field as an option."""

    max_batch_size: int = 64
    instance_kind: InstanceKind = "cpu"
    instances: int = 1
    max_queue_delay_us: int = 100
    priority_levels: bool = False  # Triton's request priorities (seed 002's `priority`)

    def config(
        self,
        name: str,
        backend: Literal["onnxruntime", "pytorch"],
        inputs: tuple[TensorConfig, ...],
        outputs: tuple[TensorConfig, ...],
        default_model_filename: str = "model.onnx",
    ) -> ModelConfigSpec:
        return ModelConfigSpec(
            name=name,
            backend=backend,
            inputs=inputs,
            outputs=outputs,
            max_batch_size=self.max_batch_size,
            default_model_filename=default_model_filename,
            instance_kind=self.instance_kind,
            instance_count=self.instances,
            max_queue_delay_us=self.max_queue_delay_us,
            priority_levels=self.priority_levels,
        )


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
    optimization: GraphOptimization | None = None  # set by the optimize transform


class Transform(Protocol):
    """An optional step between convert and write; its name is the step's name."""

    name: str

    def apply(self, artifact: Artifact) -> Artifact: ...


# A framework's convert step: (name, serving options) -> the converted artifact.
Convert = Callable[[str, ServingOptions], Artifact]


class ExportTarget(TypedDict, total=False):
    """The keyword arguments every `export_*` function takes besides its own."""

    name: Required[str]
    repository: Required[Path]
    options: ServingOptions
    session: ExportSession | None  # share one parity Triton between several exports
    progress: ProgressHook
    transforms: Sequence[Transform]


@dataclass(frozen=True)
class ExportResult:
    triton_name: str
    path: Path
    manifest: Manifest
    reused: bool  # True when an identical model was already published
    steps: tuple[StepRecord, ...] = ()  # every planned step, in order


def run_export(
    convert: Convert,
    *,
    name: str,
    repository: Path,
    options: ServingOptions = ServingOptions(),
    session: ExportSession | None = None,
    progress: ProgressHook = no_progress,
    transforms: Sequence[Transform] = (),
) -> ExportResult:
    """Run every step; an ExportError leaves the repository as it was and carries the report."""
    check_session(repository, session)
    log = StepLog(
        ["convert", *(t.name for t in transforms), "write", "parity", "publish"], progress
    )
    try:
        with log.step("convert"):
            artifact = convert(name, options)
        for transform in transforms:
            with log.step(transform.name):
                artifact = transform.apply(artifact)
        with session_scope(repository, session) as active:
            result = _write_check_publish(artifact, active, log)
    except ExportError as exc:
        exc.steps = tuple(log.steps)
        raise
    return replace(result, steps=tuple(log.steps))


def check_session(repository: Path, session: ExportSession | None) -> None:
    if session is not None and session.repository != repository.resolve():
        raise ExportError(
            f"the export session serves {session.repository}, not {repository.resolve()}"
        )


@contextmanager
def session_scope(repository: Path, session: ExportSession | None) -> Iterator[ExportSession]:
    """The caller's session when given (several exports share one Triton), else a private one."""
    if session is not None:
        yield session
        return
    with ExportSession(repository) as own:
        yield own


def _write_check_publish(artifact: Artifact, session: ExportSession, log: StepLog) -> ExportResult:
    repository = session.repository
    triton_name = triton_name_for(artifact.name, artifact.model_bytes)
    config = artifact.config.with_name(triton_name)
    config_text = render_config(config)
    staging = session.staging
    try:
        with log.step("write") as write:
            existing = _already_published(repository, triton_name, config_text)
            if existing is not None:
                write.status, write.detail = "skipped", "already published (unchanged)"
            else:
                staging.write_model(triton_name, artifact.model_filename, artifact.model_bytes)
                staging.write_config(triton_name, config_text)  # last: Triton keys on it
                write.detail = f"{len(artifact.model_bytes):,} bytes"
        if existing is not None:
            log.skip_rest("already published (unchanged)")
            return ExportResult(triton_name, repository / triton_name, existing, reused=True)

        with log.step("parity") as check:
            output_names = [tensor.name for tensor in config.outputs]
            actual = session.infer(
                triton_name, artifact.parity.inputs, output_names, config.max_batch_size
            )
            parity = artifact.parity.compare(actual)
            if not parity.passed:
                raise ExportError(f"parity check failed: {parity.detail}{artifact.parity_hint}")
            check.detail = f"{parity.rows} rows, {parity.detail}"

        with log.step("publish") as publish:
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
                optimization=artifact.optimization,
            )
            staging.write_manifest(manifest)
            # A concurrent export of the same model may have published first: same content.
            winner = find_published(repository, triton_name)
            if winner is None:
                path = staging.publish(triton_name)
            else:
                publish.status, publish.detail = "skipped", "an identical export published first"
        if winner is not None:
            staging.discard(triton_name)
            return ExportResult(triton_name, repository / triton_name, winner, reused=True)
    except BaseException:
        staging.discard(triton_name)
        raise
    return ExportResult(triton_name, path, manifest, reused=False)


def _already_published(repository: Path, triton_name: str, config_text: str) -> Manifest | None:
    existing = find_published(repository, triton_name)
    # Same model bytes, same name: only the serving options could differ, and a
    # published entry never changes, so asking for other options is an error.
    if existing is not None and (repository / triton_name / "config.pbtxt").read_text() != (
        config_text
    ):
        raise PublishedDifferentlyError(
            f"{triton_name} is already published with other serving options "
            "(config.pbtxt differs); export under another --name to serve it differently"
        )
    return existing


def config_dims(per_sample: tuple[int, ...], max_batch_size: int) -> tuple[int, ...]:
    """config.pbtxt dims: without the batch axis when Triton batches, with -1 otherwise."""
    return per_sample if max_batch_size > 0 else (-1, *per_sample)
