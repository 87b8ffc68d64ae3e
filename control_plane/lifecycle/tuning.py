"""The engine configuration as this replica applies it, and the Triton config it loads.

Seed 002's `max_batch_size` and `batch_timeout_ms` retune Triton's dynamic batcher
without touching the model repository: every load the lifecycle makes passes the
whole model config (the model's config.pbtxt, parsed, with the engine's batching
applied) as Triton's load-time override. The base is config.pbtxt and never
Triton's current config, which may be an earlier override: setting a field back to
its default must give the export's own batching back.

What `max_batch_size` means here: the dynamic batcher's preferred batch size, the
batch Triton dispatches as soon as it has gathered that many rows. It is not the
config's `max_batch_size`, the largest request Triton accepts, which the export
fixed and which callers split their rows by (the manifest's `max_batch_size`):
lowering that one would make Triton refuse requests the model core sends. So the
engine's value is capped per model at its export's max_batch_size (Triton refuses
a preferred size above it), and models without a batch axis are left alone.

Triton reloads a loaded model only when its config (or files) changed: a load with
the same config is a no-op. A restart therefore bumps `generation`, written into
the config's `parameters`, which every backend ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from sqlalchemy.ext.asyncio import AsyncSession
from tritonclient.grpc import model_config_pb2

from control_plane.db.base import utcnow
from control_plane.db.models import EngineConfig
from control_plane.lifecycle.repository import CONFIG_FILENAME

# Written into a model's config `parameters` by a restart (see the module docstring).
GENERATION_PARAMETER = "conch_engine_generation"


@dataclass(frozen=True)
class EngineTuning:
    """The stored engine configuration (None: the default) and its revision (0: no row)."""

    max_batch_size: int | None = None
    batch_timeout_us: int | None = None
    max_concurrent_requests: int | None = None
    model_cache_size: int | None = None
    revision: int = 0

    @property
    def batching(self) -> tuple[int | None, int | None]:
        return self.max_batch_size, self.batch_timeout_us


def tuning_of(row: EngineConfig | None) -> EngineTuning:
    if row is None:
        return EngineTuning()
    return EngineTuning(
        max_batch_size=row.max_batch_size,
        batch_timeout_us=row.batch_timeout_us,
        max_concurrent_requests=row.max_concurrent_requests,
        model_cache_size=row.model_cache_size,
        revision=row.revision,
    )


async def stored_tuning(session: AsyncSession) -> EngineTuning:
    return tuning_of(await session.get(EngineConfig, 1))


def tunable(config: model_config_pb2.ModelConfig) -> bool:
    """Only a model with a batch axis and no other scheduler (sequence, ensemble) has a
    dynamic batcher to tune."""
    scheduler = config.WhichOneof("scheduling_choice")
    return config.max_batch_size > 0 and scheduler in (None, "dynamic_batching")


def tuned(
    config: model_config_pb2.ModelConfig, tuning: EngineTuning, generation: int
) -> model_config_pb2.ModelConfig:
    """A copy of `config` with the engine's batching applied (priority levels and every
    other field kept as exported)."""
    result = model_config_pb2.ModelConfig()
    result.CopyFrom(config)
    if tunable(result) and tuning.batching != (None, None):
        batching = result.dynamic_batching  # created when the export had none
        batching.SetInParent()
        if tuning.max_batch_size is not None:
            del batching.preferred_batch_size[:]
            batching.preferred_batch_size.append(min(tuning.max_batch_size, result.max_batch_size))
        if tuning.batch_timeout_us is not None:
            batching.max_queue_delay_microseconds = tuning.batch_timeout_us
    if generation:
        result.parameters[GENERATION_PARAMETER].string_value = str(generation)
    return result


def read_config(repository: Path, name: str) -> model_config_pb2.ModelConfig | None:
    """The model's config.pbtxt, or None when it cannot be read or parsed: the load then
    goes ahead without an override and fails with Triton's own reason."""
    try:
        text = (repository / name / CONFIG_FILENAME).read_text(encoding="utf-8")
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except (OSError, UnicodeError, text_format.ParseError):
        return None


def override_json(repository: Path, name: str, tuning: EngineTuning, generation: int) -> str | None:
    """What `TritonGateway.load(config=...)` takes: the whole config as JSON."""
    config = read_config(repository, name)
    if config is None:
        return None
    if not config.name:
        config.name = name  # Triton defaults it to the directory; an override must say it
    applied = tuned(config, tuning, generation)
    return str(json_format.MessageToJson(applied, preserving_proto_field_name=True))


@dataclass(frozen=True)
class Batching:
    """A loaded model's batching as Triton reports it (its `model_config`)."""

    max_batch_size: int  # the export's: the largest request Triton accepts
    dynamic_batching: bool
    preferred_batch_size: list[int]
    max_queue_delay_microseconds: int


def batching_of(config: dict[str, Any]) -> Batching:
    """From protobuf's JSON of the config, where 64-bit integers are strings."""
    batcher = config.get("dynamic_batching")
    batcher_fields: dict[str, Any] = batcher or {}
    return Batching(
        max_batch_size=int(config.get("max_batch_size", 0)),
        dynamic_batching=batcher is not None,
        preferred_batch_size=[int(v) for v in batcher_fields.get("preferred_batch_size", [])],
        max_queue_delay_microseconds=int(batcher_fields.get("max_queue_delay_microseconds", 0)),
    )


async def store_tuning(session: AsyncSession, changes: dict[str, int | None]) -> EngineTuning:
    """Write the changed fields (None: back to the default) as the next revision; the
    row is locked meanwhile (PostgreSQL), so two changes never both read the same one."""
    row = await session.get(EngineConfig, 1, with_for_update=True)
    if row is None:
        row = EngineConfig(id=1, revision=0)
        session.add(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.revision = (row.revision or 0) + 1
    row.updated_at = utcnow()
    await session.flush()
    return tuning_of(row)
