"""The plain FastAPI + onnxruntime services a user would write instead of Conch.

Two of them. The *naive* one (`create_app`) is the service seeds 001 and 003
describe: one process loads the ONNX file with onnxruntime, `POST /predict`
takes `{"data": [[floats...]]}` and answers
`{"predictions": [[...]]}` from a plain `def` handler (FastAPI runs it in its
thread pool), pydantic validation and the default JSON response included. It is
deliberately not tuned: onnxruntime's default spinning thread pool competes with
FastAPI's 40-thread pool for the cores. The *tuned* one (`create_tuned_app`) is
what a competent engineer would write: onnxruntime on one thread without
spinning, an `async` handler that hands the session to a small executor, orjson
in and out. Conch's ratios compare against the tuned one. The benchmark starts
each as a uvicorn subprocess with the same worker count as Conch's arm, so all
are measured side by side in one run.

`predictions` is the model's first floating-point output (class probabilities
for a skl2onnx classifier, the logits of an MLP).
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

from conch_embedded.process import (
    ManagedProcess,
    ProcessExited,
    ProcessStartError,
    Service,
    free_port,
    http_ok,
    tail,
)
from conch_manifest.locations import state_dir

MODEL_ENV = "CONCH_BASELINE_MODEL"
Variant = Literal["naive", "tuned"]
_FACTORIES: dict[str, str] = {
    "naive": "conch_bench.baseline:create_app",
    "tuned": "conch_bench.baseline:create_tuned_app",
}


class PredictRequest(BaseModel):
    data: list[list[float]]


class PredictResponse(BaseModel):
    predictions: list[Any]
    model: str


def create_app(model_path: Path | None = None) -> FastAPI:
    """The baseline app for one ONNX file (default: the path in $CONCH_BASELINE_MODEL)."""
    import onnxruntime as ort

    path = model_path or Path(os.environ[MODEL_ENV])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    floats = [o.name for o in session.get_outputs() if "float" in o.type]
    output_name = floats[0] if floats else session.get_outputs()[0].name
    dtype = np.float64 if model_input.type == "tensor(double)" else np.float32
    app = FastAPI(title="baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> PredictResponse:
        try:
            batch = np.asarray(request.data, dtype=dtype)
            (result,) = session.run([output_name], {model_input.name: batch})
        except Exception as exc:  # onnxruntime raises untyped errors on bad shapes
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return PredictResponse(predictions=result.tolist(), model=path.parent.parent.name)

    return app


def create_tuned_app(model_path: Path | None = None, *, threads: int | None = None) -> FastAPI:
    """The tuned baseline: same contract, the same ONNX file, no wasted cores."""
    import onnxruntime as ort

    path = model_path or Path(os.environ[MODEL_ENV])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # A spinning worker burns a core waiting for work that an HTTP server feeds slowly.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    floats = [o.name for o in session.get_outputs() if "float" in o.type]
    output_name = floats[0] if floats else session.get_outputs()[0].name
    dtype = np.float64 if model_input.type == "tensor(double)" else np.float32
    name = path.parent.parent.name
    # One session call per core at a time; run() releases the GIL while it computes.
    executor = ThreadPoolExecutor(max_workers=threads or min(os.cpu_count() or 1, 4))
    app = FastAPI(title="baseline-tuned")

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"healthy"}', media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        try:
            data = orjson.loads(await request.body())["data"]
            batch = np.asarray(data, dtype=dtype)
            if batch.ndim != 2:
                raise ValueError(f"data must be rows of floats, got {batch.ndim} dimensions")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        loop = asyncio.get_running_loop()
        try:
            (result,) = await loop.run_in_executor(
                executor, session.run, [output_name], {model_input.name: batch}
            )
        except Exception as exc:  # onnxruntime raises untyped errors on bad shapes
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        body = {"predictions": result, "model": name}
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    return app


class BaselineServer(Service):
    """The baseline under uvicorn in a child process, on a free port."""

    def __init__(
        self,
        model_path: Path,
        *,
        workers: int = 1,
        port: int | None = None,
        host: str = "127.0.0.1",
        variant: Variant = "naive",
    ) -> None:
        self.model_path = model_path
        self.variant = variant
        self.workers = workers
        self.host = host
        self.port = port or free_port()
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """uvicorn's pid while started (workers, if any, are its children)."""
        return None if self._process is None else self._process.pid

    def start(self, timeout_s: float = 60.0) -> BaselineServer:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            _FACTORIES[self.variant],
            "--factory",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--workers={self.workers}",
            "--no-access-log",
            "--log-level=warning",
        ]
        env = dict(os.environ, **{MODEL_ENV: str(self.model_path)})
        log = state_dir() / "logs" / f"baseline-{self.variant}-{self.port}.log"
        self._process = ManagedProcess("baseline", argv, log_path=log, env=env)
        self._process.spawn()
        try:
            self._process.wait_ready(lambda: http_ok(f"{self.url}/health"), timeout_s)
        except ProcessExited:
            self.stop()
            raise ProcessStartError(
                f"baseline server exited during start-up: {tail(log, 5)}"
            ) from None
        except TimeoutError:
            self.stop()
            raise ProcessStartError(
                f"baseline server not healthy within {timeout_s:.0f}s (log: {log})"
            ) from None
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
