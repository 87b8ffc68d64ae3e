"""ONNX files -> the onnxruntime backend, as they are.

There is nothing to convert: the file is checked (`onnx.checker`), its graph's
inputs and outputs become the manifest's tensors and the config's, and the
parity check compares Triton with onnxruntime run here on the same rows. Those
rows are the caller's (`sample`, single-input graphs) or seeded random ones of
the declared shapes: floats from a normal distribution, integers in [0, 10)
(index-like inputs such as embedding lookups must stay in range).

A graph batches when every input and output has a dynamic first axis; it is then
served with Triton's batching, otherwise with `max_batch_size: 0` and its shapes
as declared. Protobuf files hold no code; weights in external data files are
refused (only the .onnx file is imported).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from conch_manifest.schema import TensorSpec
from exporters import parity
from exporters.arrays import Array
from exporters.config import NUMPY_DTYPES, TensorConfig
from exporters.errors import ExportError
from exporters.pipeline import (
    Artifact,
    ExportResult,
    ExportTarget,
    ParityCase,
    ServingOptions,
    run_export,
)
from exporters.tabular import load_sample

# ONNX TensorProto element types Conch serves -> Triton datatypes.
_ONNX_DATATYPES = {1: "FP32", 11: "FP64", 7: "INT64", 6: "INT32"}
DEFAULT_SAMPLE_ROWS = 32
DYNAMIC_DIM_SIZE = 4  # the size generated rows take on a dynamic axis other than the batch
INTEGER_SAMPLE_HIGH = 10


@dataclass(frozen=True)
class GraphTensor:
    name: str
    datatype: str  # Triton datatype
    dims: tuple[int, ...] | None  # declared shape, -1 where dynamic; None when undeclared


def export_onnx(
    model_path: Path,
    *,
    sample: Array | Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    **target: Unpack[ExportTarget],
) -> ExportResult:
    """Publish an ONNX file; parity rows are `sample` (one-input graphs) or generated."""

    def convert(name: str, options: ServingOptions) -> Artifact:
        return _convert(model_path, name, options, sample, atol, rtol)

    return run_export(convert, **target)


def load_onnx(path: Path) -> tuple[bytes, Any]:
    """The file's bytes and its checked ModelProto."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ExportError(f"model file {path.name} does not exist")
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{path.name} is not an ONNX model ({exc})") from None
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(tensor) for tensor in model.graph.initializer):
        raise ExportError(
            "the model keeps weights in external data files; save it as one .onnx file"
        )
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"the ONNX graph is invalid: {first}") from None
    return data, model


def graph_tensors(values: Any, initializers: set[str]) -> list[GraphTensor]:
    tensors = []
    for value in values:
        if value.name in initializers:  # older exporters list weights as inputs
            continue
        kind = value.type.WhichOneof("value")
        elem_type = value.type.tensor_type.elem_type if kind == "tensor_type" else None
        datatype = _ONNX_DATATYPES.get(elem_type) if elem_type is not None else None
        if datatype is None:
            raise ExportError(
                f"tensor {value.name!r} is not a tensor of float32, float64, int64 or int32; "
                "Conch serves only those"
            )
        shape = value.type.tensor_type
        dims = (
            tuple(d.dim_value if d.dim_value > 0 else -1 for d in shape.shape.dim)
            if shape.HasField("shape")
            else None
        )
        tensors.append(GraphTensor(value.name, datatype, dims))
    return tensors


def _batches(inputs: list[GraphTensor], outputs: list[GraphTensor]) -> bool:
    declared = [t.dims for t in inputs] + [t.dims for t in outputs if t.dims is not None]
    return all(dims is not None and len(dims) >= 1 and dims[0] == -1 for dims in declared)


def _generated(tensor: GraphTensor, rows: int, batched: bool) -> Array:
    if tensor.dims is None:
        raise ExportError(f"input {tensor.name!r} declares no shape: give sample data")
    per_sample = tensor.dims[1:] if batched else tensor.dims
    shape = tuple(DYNAMIC_DIM_SIZE if d == -1 else d for d in per_sample)
    shape = (rows, *shape) if batched else shape
    dtype = NUMPY_DTYPES[tensor.datatype]
    generator = np.random.default_rng(0)
    if tensor.datatype.startswith("INT"):
        return generator.integers(0, INTEGER_SAMPLE_HIGH, size=shape).astype(dtype)
    return generator.standard_normal(shape).astype(dtype)


def _parity_inputs(
    inputs: list[GraphTensor], sample: Array | Path | None, batched: bool
) -> dict[str, Array]:
    if sample is None:
        return {t.name: _generated(t, DEFAULT_SAMPLE_ROWS, batched) for t in inputs}
    if len(inputs) != 1:
        raise ExportError(f"sample data fits one-input graphs only; this one has {len(inputs)}")
    rows = load_sample(sample)[0] if isinstance(sample, Path) else np.asarray(sample)
    tensor = inputs[0]
    if rows.size == 0:
        raise ExportError("sample data is empty")
    return {tensor.name: np.ascontiguousarray(rows, dtype=NUMPY_DTYPES[tensor.datatype])}


def _run_in_process(data: bytes, feeds: dict[str, Array], names: list[str]) -> dict[str, Array]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        results = session.run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        shapes = {name: list(array.shape) for name, array in feeds.items()}
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"onnxruntime could not run the model on inputs {shapes}: {first}"
        ) from None
    return {name: np.asarray(result) for name, result in zip(names, results, strict=True)}


def _config_tensor(tensor: GraphTensor, actual_rank: int, batched: bool) -> TensorConfig:
    dims = tensor.dims if tensor.dims is not None else (-1,) * actual_rank
    if not batched:
        return TensorConfig(tensor.name, tensor.datatype, dims)
    per_sample = dims[1:]
    if not per_sample:  # [batch] on the wire: Triton wants dims [1], reshaped to a scalar
        return TensorConfig(tensor.name, tensor.datatype, (1,), reshape=())
    return TensorConfig(tensor.name, tensor.datatype, per_sample)


def _spec(tensor: GraphTensor, actual: Array, batched: bool) -> TensorSpec:
    dims = list(tensor.dims) if tensor.dims is not None else [-1] * actual.ndim
    if batched:
        dims[0] = -1
    return TensorSpec(name=tensor.name, datatype=tensor.datatype, shape=dims)


def _convert(
    model_path: Path,
    name: str,
    options: ServingOptions,
    sample: Array | Path | None,
    atol: float | None,
    rtol: float | None,
) -> Artifact:
    import onnx
    import onnxruntime

    data, model = load_onnx(model_path)
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = graph_tensors(model.graph.input, initializers)
    outputs = graph_tensors(model.graph.output, set())
    if not inputs or not outputs:
        raise ExportError("the graph has no inputs or no outputs")
    batched = _batches(inputs, outputs) and options.max_batch_size > 0
    feeds = _parity_inputs(inputs, sample, batched)
    expected = _run_in_process(data, feeds, [t.name for t in outputs])
    for tensor in outputs:
        if batched and (expected[tensor.name].ndim == 0):
            raise ExportError(f"output {tensor.name!r} has no batch axis")
    # A graph with a fixed first axis is served with `max_batch_size: 0`, whatever the
    # serving options asked for: Triton cannot batch it.
    served = options if batched else replace(options, max_batch_size=0)
    config = served.config(
        name,
        "onnxruntime",
        inputs=tuple(_config_tensor(t, feeds[t.name].ndim, batched) for t in inputs),
        outputs=tuple(_config_tensor(t, expected[t.name].ndim, batched) for t in outputs),
    )
    return Artifact(
        name=name,
        model_filename="model.onnx",
        model_bytes=data,
        config=config,
        framework="onnx",
        task="other",
        format="onnx",
        inputs=[_spec(t, feeds[t.name], batched) for t in inputs],
        outputs=[_spec(t, expected[t.name], batched) for t in outputs],
        parity=ParityCase(inputs=feeds, compare=parity.numeric(expected, atol, rtol)),
        framework_versions={"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    )
