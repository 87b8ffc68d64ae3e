"""The plain FastAPI + onnxruntime service a user would write instead of Conch.

This is the service seeds 001 and 003 describe: one process loads the ONNX file
with onnxruntime, `POST /predict` takes `{"data": [[floats...]]}` and answers
`{"predictions": [[...]]}` from a plain `def` handler (FastAPI runs it in its
thread pool), pydantic validation and the default JSON response included. It is
deliberately not tuned: it is the reference a Conch user would otherwise ship.
The benchmark starts it as a uvicorn subprocess with the same worker count as
Conch's arm, so both are measured side by side in one run.

`predictions` is the model's first floating-point output (class probabilities
for a skl2onnx classifier, the logits of an MLP).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
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


class BaselineServer(Service):
    """The baseline under uvicorn in a child process, on a free port."""

    def __init__(
        self,
        model_path: Path,
        *,
        workers: int = 1,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.model_path = model_path
        self.workers = workers
        self.host = host
        self.port = port or free_port()
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> BaselineServer:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "conch_bench.baseline:create_app",
            "--factory",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--workers={self.workers}",
            "--no-access-log",
            "--log-level=warning",
        ]
        env = dict(os.environ, **{MODEL_ENV: str(self.model_path)})
        log = state_dir() / "logs" / f"baseline-{self.port}.log"
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
