"""PyTorch modules -> ONNX (onnxruntime backend) or TorchScript (pytorch backend).

The model is read from a TorchScript archive (`torch.jit.save`, no code runs)
or, failing that, from a pickled `nn.Module` (`torch.save(model)`), which runs
code while loading: export only files you trust. Tensors follow the naming of
NVIDIA's libtorch backend: `INPUT__0`, `OUTPUT__0`, ... in forward() order.

A classifier names its classes with `labels`, one per column of `OUTPUT__0`
(scores or probabilities, [batch, n_classes]); the prediction API then answers
the label of each row's highest column, in the labels' own type.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Unpack

import numpy as np

from conch_manifest.schema import ClassLabel, Task, TensorSpec, encode_labels
from exporters import parity
from exporters.arrays import Array
from exporters.config import TensorConfig
from exporters.errors import ExportError
from exporters.pipeline import (
    Artifact,
    ExportResult,
    ExportTarget,
    ParityCase,
    ServingOptions,
    config_dims,
    run_export,
)
from exporters.tabular import load_sample

TorchFormat = Literal["onnx", "torchscript"]
ONNX_OPSET = 17
DEFAULT_SAMPLE_ROWS = 64
_TRITON_DTYPES = {"torch.float32": "FP32", "torch.float64": "FP64", "torch.int64": "INT64"}


def load_torch_model(path: Path) -> Any:
    """A module in eval mode: TorchScript first, then a pickled nn.Module."""
    import torch

    if not path.is_file():
        raise ExportError(f"model file {path} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError:
        pass  # not a TorchScript archive; maybe a pickled module
    try:
        model = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling raises anything for damaged files
        raise ExportError(f"could not load {path} as a PyTorch model: {exc!r}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ExportError(
            f"{path} holds a {type(model).__name__}, not an nn.Module "
            "(a state_dict needs its model class: save the module or a TorchScript archive)"
        )
    return model.eval()


def _sample_rows(sample: Array | Path | None, input_shape: tuple[int, ...] | None) -> Array:
    if sample is not None:
        rows = (
            load_sample(sample)[0] if isinstance(sample, Path) else np.asarray(sample, np.float32)
        )
        if input_shape is not None and tuple(rows.shape[1:]) != input_shape:
            raise ExportError(
                f"sample rows have shape {tuple(rows.shape[1:])}, --input-shape says {input_shape}"
            )
    elif input_shape is not None:
        # Without held-out data, seeded random rows still exercise every weight.
        rows = np.random.default_rng(0).standard_normal((DEFAULT_SAMPLE_ROWS, *input_shape))
    else:
        raise ExportError("give sample data or an input shape (per sample, without the batch axis)")
    if rows.ndim < 2 or len(rows) == 0:
        raise ExportError(
            f"sample data must have a batch axis and at least one row, got {rows.shape}"
        )
    return np.ascontiguousarray(rows, dtype=np.float32)


def export_torch(
    model_path: Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    sample: Array | Path | None = None,
    format: TorchFormat = "onnx",
    task: Task | None = None,
    labels: Sequence[ClassLabel] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    **target: Unpack[ExportTarget],
) -> ExportResult:
    """Export a module; parity rows are `sample`, or seeded random rows of `input_shape`.

    `labels` (one per column of OUTPUT__0) make it a classifier; `task` defaults to
    "classification" with labels and "other" without.
    """
    task = _checked_task(task, labels)

    def convert(name: str, options: ServingOptions) -> Artifact:
        return _convert(
            model_path, name, options, input_shape, sample, format, task, labels, atol, rtol
        )

    return run_export(convert, **target)


def _checked_task(task: Task | None, labels: Sequence[ClassLabel] | None) -> Task:
    if labels is None:
        return task or "other"
    if task not in (None, "classification"):
        raise ExportError(f"class labels describe a classifier, not a {task} model")
    if len(labels) == 0 or len(set(labels)) != len(labels):
        raise ExportError("class labels must be a non-empty list without repeats")
    return "classification"


def _output_specs(
    expected: dict[str, Array],
    outputs: tuple[TensorConfig, ...],
    labels: Sequence[ClassLabel] | None,
) -> list[TensorSpec]:
    """The manifest's outputs; the labels name the columns of OUTPUT__0."""
    specs = [
        TensorSpec(name=t.name, datatype=t.datatype, shape=[-1, *expected[t.name].shape[1:]])
        for t in outputs
    ]
    if labels is None:
        return specs
    first = expected["OUTPUT__0"]
    if first.ndim != 2 or first.shape[1] != len(labels):
        columns = "no columns" if first.ndim != 2 else f"{first.shape[1]} columns"
        raise ExportError(
            f"{len(labels)} class labels, but OUTPUT__0 has {columns} per sample "
            f"(shape {list(first.shape[1:])}): give one label per output column"
        )
    text, kind = encode_labels(labels)
    specs[0] = specs[0].model_copy(
        update={
            "meaning": "score of each class, columns in class_labels order",
            "class_labels": text,
            "class_label_type": kind,
        }
    )
    return specs


def _convert(
    model_path: Path,
    name: str,
    options: ServingOptions,
    input_shape: tuple[int, ...] | None,
    sample: Array | Path | None,
    format: TorchFormat,
    task: Task,
    labels: Sequence[ClassLabel] | None,
    atol: float | None,
    rtol: float | None,
) -> Artifact:
    import torch

    model = load_torch_model(model_path)
    rows = _sample_rows(sample, input_shape)
    example = torch.from_numpy(rows)
    try:
        with torch.inference_mode():
            result = model(example)
    except Exception as exc:  # a shape mismatch surfaces as any of several errors
        raise ExportError(
            f"the model rejected input of shape {tuple(rows.shape)}: {str(exc).splitlines()[0]}"
        ) from exc
    results = list(result) if isinstance(result, tuple | list) else [result]
    expected = {f"OUTPUT__{i}": r.detach().cpu().numpy() for i, r in enumerate(results)}
    for out_name, array in expected.items():
        if str(results[int(out_name.split("__")[1])].dtype) not in _TRITON_DTYPES or array.ndim < 1:
            raise ExportError(f"output {out_name} has an unsupported dtype or no batch axis")

    model_bytes = (
        _torchscript_bytes(model, example)
        if format == "torchscript"
        else _onnx_bytes(model, example, list(expected))
    )
    mbs = options.max_batch_size
    outputs = tuple(
        TensorConfig(n, _TRITON_DTYPES[str(r.dtype)], config_dims(tuple(a.shape[1:]), mbs))
        for (n, a), r in zip(expected.items(), results, strict=True)
    )
    output_specs = _output_specs(expected, outputs, labels)
    config = options.config(
        name,
        "pytorch" if format == "torchscript" else "onnxruntime",
        inputs=(TensorConfig("INPUT__0", "FP32", config_dims(tuple(rows.shape[1:]), mbs)),),
        outputs=outputs,
        default_model_filename="model.pt" if format == "torchscript" else "model.onnx",
    )
    return Artifact(
        name=name,
        model_filename=config.default_model_filename,
        model_bytes=model_bytes,
        config=config,
        framework="pytorch",
        task=task,
        format=format,
        inputs=[TensorSpec(name="INPUT__0", datatype="FP32", shape=[-1, *rows.shape[1:]])],
        outputs=output_specs,
        parity=ParityCase(inputs={"INPUT__0": rows}, compare=parity.numeric(expected, atol, rtol)),
        framework_versions={"torch": torch.__version__},
    )


def _onnx_bytes(model: Any, example: Any, output_names: list[str]) -> bytes:
    import torch

    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in ["INPUT__0", *output_names]}
    try:
        with warnings.catch_warnings():
            # dynamo=False: torch 2.13's default exporter needs onnxscript, which Conch
            # does not install; the TorchScript-based exporter warns it is legacy.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buffer,
                input_names=["INPUT__0"],
                output_names=output_names,
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types for unsupported ops
        raise ExportError(f"torch.onnx.export failed: {str(exc).splitlines()[0]}") from exc
    return buffer.getvalue()


def _torchscript_bytes(model: Any, example: Any) -> bytes:
    import torch

    if not isinstance(model, torch.jit.ScriptModule):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about data-dependent flow
                model = torch.jit.trace(model, example)
        except Exception as exc:  # tracing raises many types
            raise ExportError(f"torch.jit.trace failed: {str(exc).splitlines()[0]}") from exc
    buffer = io.BytesIO()
    torch.jit.save(model, buffer)
    return buffer.getvalue()
