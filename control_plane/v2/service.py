"""What every model-scoped v2 call does: name -> visible model -> loaded -> Triton.

A caller names a model by its Triton name, its registered name (the newest model
of that name) or its Conch id (`ModelCatalog.resolve`). A model outside the key's
project answers exactly like an unknown one: the same 404, whatever name was used.

Registered models are served on demand, so every model-scoped call (metadata,
config, readiness, inference) first asks the lifecycle to have the model loaded
(`TritonGateway.loader`): a cold model answers 503 + Retry-After while it loads,
as every other door does, and `is_model_ready` turns true once it has.

Requests travel to Triton under the model's Triton name, and Triton's answers
come back unchanged: `model_name` in a response is the Triton name. Rewriting it
would mean parsing every response body (see `triton/passthrough.py` for why
bodies pass untouched); the Triton name is one of the names `{name}` accepts, so
a client can use what it reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from control_plane.core import metrics
from control_plane.core.components import Components
from control_plane.core.errors import ModelNotFoundError, ServiceUnavailableError
from control_plane.model_core.handle import ModelHandle
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway
from control_plane.triton.passthrough import TritonAnswer, TritonPassthrough, answer_error


def passthrough_of(components: Components) -> TritonPassthrough:
    found = components.find(TritonPassthrough)
    if found is None:
        raise ServiceUnavailableError(
            "the Open Inference Protocol door needs Triton's HTTP address (CONCH_TRITON_HTTP_URL)"
        )
    return found


def model_not_found(ref: str) -> ModelNotFoundError:
    # One answer for unknown and invisible models, whichever name the caller used.
    return ModelNotFoundError(f"model {ref[:200]!r} not found", model_id=ref[:200])


def version_not_found(ref: str, version: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {ref[:200]!r} has no version {version}", model_id=ref[:200], version=version
    )


def model_target(triton_name: str, version: str | None, suffix: str = "") -> str:
    """Triton's path for the model (and version): `/v2/models/<name>[/versions/<v>]<suffix>`."""
    target = f"/v2/models/{quote(triton_name, safe='')}"
    if version is not None:
        target += f"/versions/{version}"
    return target + suffix


async def call_model(
    components: Components,
    handle: ModelHandle,
    ref: str,
    version: str | None,
    suffix: str,
    *,
    method: str = "GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> TritonAnswer:
    """Forward one request about a visible model (`ref` is the name the caller used)
    and return Triton's successful answer.

    Triton's failures are raised as Conch's errors (`answer_error`); inference is
    counted in `InferenceStats` when the app provides it.
    """
    passthrough = passthrough_of(components)
    gateway = components.get(TritonGateway)
    target = model_target(handle.triton_name, version, suffix)
    # Triton's answer for a model it has not loaded: 400 from /ready, else 404.
    not_loaded = 400 if suffix == "/ready" else 404
    request = _Forward(gateway, passthrough, handle.triton_name, method, target, [*headers], body)
    stats = components.find(InferenceStats) if suffix == "/infer" else None
    started = time.perf_counter()
    ok = False
    try:
        answer = await request.send_loaded(not_loaded)
        ok = answer.ok
    finally:
        if stats is not None:
            stats.record(handle.model_id, time.perf_counter() - started, ok)
    if ok:
        return answer
    if answer.status == not_loaded:
        # The model is loaded (or was loaded again just now): what Triton lacks is the version.
        raise model_not_found(ref) if version is None else version_not_found(ref, version)
    raise answer_error(answer, "inference" if suffix == "/infer" else "model request")


@dataclass(frozen=True, slots=True)
class _Forward:
    gateway: TritonGateway
    passthrough: TritonPassthrough
    triton_name: str
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    async def send_loaded(self, not_loaded_status: int) -> TritonAnswer:
        """Sent once the lifecycle has the model loaded; sent once more if Triton no
        longer has it (unloaded behind the lifecycle's back: a restart, another
        process), as `TritonGateway.infer` does."""
        loader = self.gateway.loader
        if loader is not None:
            await loader(self.triton_name)
        answer = await self._send()
        if loader is None or answer.status != not_loaded_status or await self._model_ready():
            return answer  # a bad request, an unknown version: the model itself is there
        if self.gateway.on_not_loaded is not None:
            self.gateway.on_not_loaded(self.triton_name)
        await loader(self.triton_name)
        return await self._send()

    async def _send(self) -> TritonAnswer:
        # Requests inside Triton per model: the lifecycle never evicts a model in use.
        in_flight = self.gateway.in_flight
        in_flight[self.triton_name] += 1
        started = time.perf_counter()
        ok = False
        try:
            answer = await self.passthrough.forward(
                self.method, self.target, self.headers, self.body
            )
            ok = answer.ok
            return answer
        finally:
            in_flight[self.triton_name] -= 1
            if self.method == "POST":  # an inference, as the gateway's calls are counted
                metrics.observe_triton_call(self.triton_name, ok, time.perf_counter() - started)

    async def _model_ready(self) -> bool:
        target = model_target(self.triton_name, None, "/ready")
        return (await self.passthrough.forward("GET", target)).ok
