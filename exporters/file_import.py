"""`python -m exporters.file_import`: one model file through the `conch export` exporters,
for a server that must not import them itself.

The control plane's `POST /api/inference/models/load` runs this in a child process
(control_plane/imports/runner.py): unpickling runs code, a converter may use
gigabytes, and the parity Triton is a process of its own, none of which belongs in
the serving process. The request is one JSON object on stdin (`ImportRequest`);
the outcome is one JSON object written to `result_path` (stdout stays free for
whatever the libraries print). Exit status 0 means the result file was written.

Each model type goes through the same exporter function as its `conch export`
subcommand, with the same parity check; `optimize` (the request's `compile_model`)
adds the `--optimize` step, onnxruntime's offline graph optimization (ONNX only).
What the CLI takes as `--sample-data` is the request's `sample` or, when absent,
seeded generated rows (see `generated_rows`). SIGTERM unwinds like an error: the
staged model is discarded and the private Triton stopped, so a killed import leaves
nothing behind.
"""

from __future__ import annotations

import json
import pickle
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from exporters.arrays import Array
from exporters.errors import ExportError
from exporters.onnx_optimize import OnnxGraphOptimization
from exporters.pipeline import ExportResult, ServingOptions, Transform
from exporters.steps import StepRecord

ModelType = Literal["onnx", "xgboost", "lightgbm", "sklearn", "torchscript"]
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
GENERATED_ROWS_PER_SCALE = 32
# Generated tabular rows at three magnitudes, so tree splits on features of any range
# see rows on both sides more often than unit-scale rows alone would.
GENERATED_SCALES = (1.0, 10.0, 1000.0)


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_type: ModelType
    model_path: Path  # a private copy of the caller's file
    name: str
    repository: Path
    result_path: Path
    allow_pickle: bool = False
    sample: list[Any] | None = None  # held-out rows for the parity check
    input_shape: list[int] | None = None  # torchscript: one sample, without the batch axis
    atol: float | None = None
    rtol: float | None = None
    max_batch_size: int = 64
    optimize: bool = False  # compile_model: publish the graph optimized offline (ONNX only)


def pickled(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def is_pickle(model_type: str, path: Path) -> bool:
    """Whether importing this file unpickles it (the control plane applies the same rule)."""
    return model_type == "sklearn" or pickled(path)


def generated_rows(n_features: int) -> Array:
    generator = np.random.default_rng(0)
    blocks = [
        generator.standard_normal((GENERATED_ROWS_PER_SCALE, n_features)) * scale
        for scale in GENERATED_SCALES
    ]
    rows: Array = np.concatenate(blocks).astype(np.float32)
    return rows


def run_import(request: ImportRequest) -> ExportResult:
    path = request.model_path
    if is_pickle(request.model_type, path) and not request.allow_pickle:
        raise ExportError("importing pickles is disabled (CONCH_ALLOW_PICKLE_IMPORT)")
    options = ServingOptions(max_batch_size=request.max_batch_size)
    sample = None if request.sample is None else np.asarray(request.sample, dtype=np.float64)
    transforms: list[Transform] = [OnnxGraphOptimization()] if request.optimize else []
    if request.model_type == "onnx":
        from exporters.onnx_exporter import export_onnx

        return export_onnx(
            path, sample=sample, name=request.name, repository=request.repository,
            options=options, atol=request.atol, rtol=request.rtol, transforms=transforms,
        )  # fmt: skip
    if request.model_type == "torchscript":
        # With `optimize`, the transform refuses it (the control plane answers 422 first).
        return _torchscript(request, sample, options, transforms)
    return _tabular(request, sample, options, transforms)


def _torchscript(
    request: ImportRequest,
    sample: Array | None,
    options: ServingOptions,
    transforms: list[Transform],
) -> ExportResult:
    import torch

    from exporters.torch_exporter import export_torch

    try:
        # export_torch falls back to unpickling a module: refuse anything else first.
        torch.jit.load(str(request.model_path), map_location="cpu")
    except RuntimeError:
        raise ExportError(
            f"{request.model_path.name} is not a TorchScript archive (torch.jit.save)"
        ) from None
    shape = tuple(request.input_shape) if request.input_shape else None
    return export_torch(
        request.model_path, input_shape=shape, sample=sample, format="torchscript",
        atol=request.atol, rtol=request.rtol, name=request.name,
        repository=request.repository, options=options, transforms=transforms,
    )  # fmt: skip


def _tabular(
    request: ImportRequest,
    sample: Array | None,
    options: ServingOptions,
    transforms: list[Transform],
) -> ExportResult:
    from exporters.tabular import TabularSource, tabular_exporter

    with tempfile.TemporaryDirectory(prefix="conch-native-") as scratch:
        source: TabularSource = _tabular_source(request, Path(scratch))
        rows = generated_rows(source.n_features) if sample is None else sample
        # The exporter `conch export <framework>` runs, given the already loaded model.
        export = tabular_exporter(lambda _: source)
        return export(
            request.model_path, sample=rows, atol=request.atol, rtol=request.rtol,
            name=request.name, repository=request.repository, options=options,
            transforms=transforms,
        )  # fmt: skip


def _tabular_source(request: ImportRequest, scratch: Path) -> Any:
    path = request.model_path
    if request.model_type == "sklearn":
        from exporters.sklearn_exporter import SklearnSource

        return SklearnSource(path)
    native = _native_booster_file(request.model_type, path, scratch) if pickled(path) else path
    if request.model_type == "xgboost":
        from exporters.xgboost_exporter import XGBoostSource

        return XGBoostSource(native)
    from exporters.lightgbm_exporter import LightGBMSource

    return LightGBMSource(native)


def _native_booster_file(model_type: str, path: Path, scratch: Path) -> Path:
    """A pickled booster (or its scikit-learn wrapper) saved in its framework's own format."""
    import joblib

    try:
        if path.suffix.lower() == ".joblib":
            model = joblib.load(path)
        else:
            with path.open("rb") as handle:
                model = pickle.load(handle)
    except Exception as exc:  # unpickling raises anything for damaged files
        raise ExportError(f"could not unpickle {path.name}: {exc!r}") from None
    booster = model.get_booster() if hasattr(model, "get_booster") else model  # XGBModel
    booster = getattr(booster, "booster_", booster)  # LGBMModel
    if model_type == "xgboost":
        import xgboost

        if not isinstance(booster, xgboost.Booster):
            raise ExportError(f"{path.name} holds a {type(model).__name__}, not an XGBoost model")
        target = scratch / "model.json"
    else:
        import lightgbm

        if not isinstance(booster, lightgbm.Booster):
            raise ExportError(f"{path.name} holds a {type(model).__name__}, not a LightGBM model")
        target = scratch / "model.txt"
    booster.save_model(str(target))
    return target


def outcome(result: ExportResult) -> dict[str, Any]:
    manifest = result.manifest
    return {
        "ok": True,
        "triton_name": result.triton_name,
        "reused": result.reused,
        "framework": manifest.framework,
        "task": manifest.task,
        "format": manifest.format,
        "parity": manifest.parity.model_dump(mode="json"),
        "optimization": (
            None if manifest.optimization is None else manifest.optimization.model_dump(mode="json")
        ),
        "steps": [_step(step) for step in result.steps],
    }


def failure(kind: str, message: str, steps: tuple[StepRecord, ...] = ()) -> dict[str, Any]:
    line = message.strip().splitlines()[0] if message.strip() else kind
    return {"ok": False, "kind": kind, "error": line, "steps": [_step(s) for s in steps]}


def _step(step: StepRecord) -> dict[str, Any]:
    return {
        "name": step.name,
        "status": step.status,
        "seconds": round(step.seconds, 3),
        "detail": step.detail,
    }


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: staging discarded, parity Triton stopped


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    request = ImportRequest.model_validate_json(sys.stdin.read())
    from conch_embedded.process import ProcessStartError

    try:
        result: dict[str, Any] = outcome(run_import(request))
    except ExportError as exc:
        result = failure("export", str(exc), exc.steps)
    except ProcessStartError as exc:
        result = failure("triton", str(exc))
    except ImportError as exc:
        result = failure("dependency", f"{exc} (install the exporter's extra)")
    except Exception as exc:  # a library bug: reported as such, with the trace on stderr
        traceback.print_exc()
        result = failure("internal", f"{type(exc).__name__}: {exc}")
    temporary = request.result_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result))
    temporary.replace(request.result_path)  # whole or absent: the parent never reads half
    return 0


if __name__ == "__main__":
    sys.exit(main())
