"""config.pbtxt from a typed spec, through Triton's own protobuf schema.

Writing the text by hand invites typos Triton only reports at load time; going
through `ModelConfig` makes every field name and enum value checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVEL_COUNT

InstanceKind = Literal["cpu", "gpu"]

# Triton datatype names (as in the KServe protocol) -> numpy dtype names.
NUMPY_DTYPES = {
    "FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32", "BYTES": "object",
}  # fmt: skip
# The protocol's BYTES is called TYPE_STRING in config.pbtxt.
_CONFIG_TYPE_NAMES = {"BYTES": "STRING"}


@dataclass(frozen=True)
class TensorConfig:
    name: str
    datatype: str  # protocol datatype: FP32, INT64, BYTES (written TYPE_STRING), ...
    dims: tuple[int, ...]  # per-sample shape (batch axis excluded when max_batch_size > 0)
    reshape: tuple[int, ...] | None = None  # e.g. () for a 1-D model output of [batch]


@dataclass(frozen=True)
class ModelConfigSpec:
    name: str
    backend: Literal["onnxruntime", "pytorch"]
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    max_batch_size: int = 64
    default_model_filename: str = "model.onnx"
    instance_kind: InstanceKind = "cpu"
    instance_count: int = 1
    dynamic_batching: bool = True
    max_queue_delay_us: int = 100
    # Off by default: in the embedded Triton (2.51) a model with priority levels
    # served half the throughput with 0.5 s stalls (docs/PERFORMANCE.md).
    priority_levels: bool = False
    parameters: dict[str, str] = field(default_factory=dict)

    def with_name(self, name: str) -> ModelConfigSpec:
        return replace(self, name=name)


def _tensor(message: pb.ModelInput | pb.ModelOutput, spec: TensorConfig) -> None:
    message.name = spec.name
    type_name = _CONFIG_TYPE_NAMES.get(spec.datatype, spec.datatype)
    message.data_type = pb.DataType.Value(f"TYPE_{type_name}")
    message.dims.extend(spec.dims)
    if spec.reshape is not None:
        # An empty reshape must still be present: `reshape: { }` means "scalar per sample".
        message.reshape.SetInParent()
        message.reshape.shape.extend(spec.reshape)


def build_model_config(spec: ModelConfigSpec) -> pb.ModelConfig:
    if spec.max_batch_size < 0:
        raise ValueError("max_batch_size must be >= 0")
    if spec.instance_count < 1:
        raise ValueError("instance count must be >= 1")
    config = pb.ModelConfig(
        name=spec.name,
        backend=spec.backend,
        max_batch_size=spec.max_batch_size,
        default_model_filename=spec.default_model_filename,
    )
    for tensor in spec.inputs:
        _tensor(config.input.add(), tensor)
    for tensor in spec.outputs:
        _tensor(config.output.add(), tensor)
    group = config.instance_group.add()
    group.kind = (
        pb.ModelInstanceGroup.KIND_GPU
        if spec.instance_kind == "gpu"
        else pb.ModelInstanceGroup.KIND_CPU
    )
    group.count = spec.instance_count
    # Dynamic batching only means something when the model accepts a batch axis.
    if spec.dynamic_batching and spec.max_batch_size > 0:
        batching = config.dynamic_batching
        batching.max_queue_delay_microseconds = spec.max_queue_delay_us
        if spec.priority_levels:
            # The control plane sends each request's priority as one of these levels
            # (conch_manifest/priorities.py); a request without one gets the default.
            batching.priority_levels = PRIORITY_LEVEL_COUNT
            batching.default_priority_level = DEFAULT_PRIORITY_LEVEL
    for key, value in sorted(spec.parameters.items()):
        config.parameters[key].string_value = value
    return config


def render_config(spec: ModelConfigSpec) -> str:
    """The config.pbtxt text. `max_batch_size: 0` is written explicitly: proto3 drops
    default values, and Triton then guesses the batching from the model file."""
    text = str(text_format.MessageToString(build_model_config(spec)))
    if spec.max_batch_size == 0:
        lines = text.splitlines(keepends=True)
        insert_at = next(i for i, line in enumerate(lines) if line.startswith("name:")) + 1
        lines.insert(insert_at, "max_batch_size: 0\n")
        text = "".join(lines)
    return text
