"""A private Triton for parity checks, shared by every export in one session.

The Triton serves the staging area (not the published repository), on free
ports, and starts on the first parity check only, so an export refused early
(unreadable file, wrong sample shape) costs no server start.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType

import numpy as np
from tritonclient import grpc as triton_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from conch_embedded.triton_server import EmbeddedTriton
from exporters.arrays import Array
from exporters.errors import ExportError
from exporters.repository import StagingArea


class ExportSession:
    """Staging area + lazily started private Triton; use as a context manager."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository.resolve()
        self.staging = StagingArea(self.repository)
        self._triton: EmbeddedTriton | None = None
        self._client: triton_grpc.InferenceServerClient | None = None

    def __enter__(self) -> ExportSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._triton is not None:
            self._triton.stop()
            self._triton = None
        self.staging.close()

    def _connect(self) -> triton_grpc.InferenceServerClient:
        if self._client is None:
            triton = EmbeddedTriton.on_free_ports(self.staging.root)
            triton.start()
            self._triton = triton
            self._client = triton_grpc.InferenceServerClient(triton.grpc_url)
        return self._client

    def infer(
        self,
        triton_name: str,
        inputs: dict[str, Array],
        output_names: list[str],
        max_batch_size: int,
    ) -> dict[str, Array]:
        """Load the staged model, run every row through it, unload it."""
        client = self._connect()
        try:
            client.load_model(triton_name)
        except InferenceServerException as exc:
            raise ExportError(
                f"Triton could not load the converted model: {exc.message()}"
            ) from exc
        try:
            rows = len(next(iter(inputs.values())))
            # Requests no larger than the config allows; the batcher may merge them.
            step = max_batch_size or rows
            parts: dict[str, list[Array]] = {name: [] for name in output_names}
            for start in range(0, rows, step):
                chunk = {name: array[start : start + step] for name, array in inputs.items()}
                result = self._infer_once(client, triton_name, chunk, output_names)
                for name in output_names:
                    parts[name].append(result[name])
            return {name: np.concatenate(arrays, axis=0) for name, arrays in parts.items()}
        finally:
            # The model may never have loaded; then there is nothing to release.
            with contextlib.suppress(InferenceServerException):
                client.unload_model(triton_name)

    @staticmethod
    def _infer_once(
        client: triton_grpc.InferenceServerClient,
        triton_name: str,
        chunk: dict[str, Array],
        output_names: list[str],
    ) -> dict[str, Array]:
        request = []
        for name, array in chunk.items():
            tensor = triton_grpc.InferInput(
                name, list(array.shape), np_to_triton_dtype(array.dtype)
            )
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            request.append(tensor)
        wanted = [triton_grpc.InferRequestedOutput(name) for name in output_names]
        try:
            response = client.infer(triton_name, request, outputs=wanted)
        except InferenceServerException as exc:
            raise ExportError(
                f"Triton inference failed during the parity check: {exc.message()}"
            ) from exc
        return {name: response.as_numpy(name) for name in output_names}
