"""A typed Python client for Conch's REST API, sync (`Client`) and async (`AsyncClient`).

    from conch.client import Client
    with Client("http://127.0.0.1:8081", api_key="...") as conch:
        conch.predict([[14.1, 20.3, ...]], model_id="breast-cancer")["predictions"]

Every endpoint is written once, in `_Api`, as the request it sends; the two
clients differ only in how they send it. A refused request raises `ConchError`,
which carries Conch's error body (`error`, `message`, `details`, `request_id`).
429 and 503 answers are retried after the `Retry-After` they carry (at most
`max_retries` times, each wait capped at `max_retry_wait_s`); a request that
could not be sent (connection refused) is retried with a short backoff, and one
whose answer was lost only when its method is idempotent (or it carries an
Idempotency-Key).

The client imports nothing of the control plane: it needs only httpx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

import httpx

JSON = Any  # a decoded JSON body: dict, list, str, number, bool or None
Priority = Literal["low", "normal", "high", "urgent"]
R = TypeVar("R")

_RETRIED_STATUSES = frozenset({429, 503})
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class ConchError(Exception):
    """Conch refused the request: its status and error body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.details = details or {}
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    @classmethod
    def from_response(cls, response: httpx.Response) -> ConchError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"message": response.text[:500] or response.reason_phrase}
        details = body.get("details")
        return cls(
            response.status_code,
            str(body.get("error") or response.reason_phrase),
            str(body.get("message") or response.reason_phrase),
            details if isinstance(details, dict) else None,
            body.get("request_id") or response.headers.get("x-request-id"),
            _retry_after(response),
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # absent, or an HTTP date: Conch always sends seconds


@dataclass(frozen=True)
class Request:
    """One call as data: what both clients send."""

    method: str
    path: str
    json: JSON = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    max_retry_wait_s: float = 30.0
    backoff_s: float = 0.2  # after a connection failure, doubled each time

    def wait_after(
        self,
        attempt: int,
        request: Request,
        response: httpx.Response | None,
        error: Exception | None,
    ) -> float | None:
        """Seconds to wait before trying again, or None to give up."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if response.status_code not in _RETRIED_STATUSES:
                return None
            after = _retry_after(response)
            return min(self.max_retry_wait_s, after if after is not None else self.backoff_s)
        unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        retriable = request.method in _IDEMPOTENT or "Idempotency-Key" in request.headers
        if not unsent and not retriable:
            return None  # the server may have acted on it: the caller decides
        return min(self.max_retry_wait_s, self.backoff_s * float(2**attempt))


def _path(*parts: str | int) -> str:
    return "/" + "/".join(quote(str(part), safe="") for part in parts)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


class _Api(Generic[R]):
    """Every endpoint as the request it sends; `_send` is the client's transport."""

    def _send(self, request: Request) -> R:
        raise NotImplementedError

    def _call(self, method: str, path: str, json: JSON = None, **params: Any) -> R:
        return self._send(Request(method, path, json, _without_none(params) or None))

    def request(
        self, method: str, path: str, *, json: JSON = None, params: dict[str, Any] | None = None
    ) -> R:
        """Any endpoint by its path, with the same errors and retries as the named methods."""
        return self._send(Request(method.upper(), path, json, params))

    # --- seed 000: recommendations (/inference) ---
    def recommend(self, model_id: int, user_id: str, cutoff: int = 10) -> R:
        body = {"user_id": user_id, "cutoff": cutoff}
        return self._call("POST", _path("inference", "predict", model_id), body)

    def recommend_batch(self, model_id: int, user_ids: Sequence[str], cutoff: int = 10) -> R:
        body = {"user_ids": list(user_ids), "cutoff": cutoff}
        return self._call("POST", _path("inference", "predict", model_id, "batch"), body)

    def recommend_for_project(self, project_id: int, user_id: str, cutoff: int = 10) -> R:
        body = {"user_id": user_id, "cutoff": cutoff}
        return self._call("POST", _path("inference", "predict", "project", project_id), body)

    def health(self) -> R:
        return self._call("GET", "/inference/health")

    def ready(self) -> R:
        return self._call("GET", "/inference/ready")

    # --- seed 002: predictions (/api/inference) ---
    def predict(
        self,
        data: JSON,
        model_id: str | int,
        *,
        return_probabilities: bool = False,
        timeout_ms: int | None = None,
        priority: Priority | None = None,
    ) -> R:
        body = _without_none(
            {
                "data": data,
                "model_id": str(model_id),
                "return_probabilities": return_probabilities,
                "timeout_ms": timeout_ms,
                "priority": priority,
            }
        )
        return self._call("POST", "/api/inference/predict", body)

    def predict_batch(
        self,
        data: JSON,
        model_id: str | int,
        *,
        batch_size: int | None = None,
        return_probabilities: bool = False,
        timeout_ms: int | None = None,
        priority: Priority | None = None,
    ) -> R:
        body = _without_none(
            {
                "data": data,
                "model_id": str(model_id),
                "batch_size": batch_size,
                "return_probabilities": return_probabilities,
                "timeout_ms": timeout_ms,
                "priority": priority,
            }
        )
        return self._call("POST", "/api/inference/predict/batch", body)

    def predict_multi(
        self, requests: Sequence[dict[str, Any]], *, batch_timeout_ms: int | None = None
    ) -> R:
        """`requests`: items of {"request_id", "data", "model_id"}; each answered on its own."""
        body = _without_none({"requests": list(requests), "batch_timeout_ms": batch_timeout_ms})
        return self._call("POST", "/api/inference/predict/multi-batch", body)

    # --- seed 002: async predictions (/api/inference/predict/async) ---
    def submit_async(
        self,
        data: JSON,
        model_id: str | int,
        *,
        priority: Priority | None = None,
        callback_url: str | None = None,
        return_probabilities: bool = False,
        batch_size: int | None = None,
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Queue a prediction: answers its `task_id`; poll `get_task`, or have the result
        POSTed to `callback_url`. A retry with the same `idempotency_key` and body
        answers the same task."""
        body = _without_none(
            {
                "data": data,
                "model_id": str(model_id),
                "priority": priority,
                "callback_url": callback_url,
                "return_probabilities": return_probabilities,
                "batch_size": batch_size,
                "timeout_ms": timeout_ms,
            }
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._send(Request("POST", "/api/inference/predict/async", body, headers=headers))

    def get_task(self, task_id: str) -> R:
        return self._call("GET", _path("api", "inference", "predict", "async", task_id))

    def cancel_task(self, task_id: str) -> R:
        """Only a queued task can be cancelled (409 once a worker started it)."""
        return self._call("DELETE", _path("api", "inference", "predict", "async", task_id))

    def list_tasks(self, *, status: str | None = None, limit: int | None = None) -> R:
        """Recent tasks, newest first: the key's own (an admin key's: its project's)."""
        return self._call("GET", "/api/inference/predict/async", status=status, limit=limit)

    def task_queues(self) -> R:
        """Tasks waiting per priority, running, completed per second, and the workers."""
        return self._call("GET", "/api/inference/predict/async/queues")

    # --- seed 002: models (/api/inference/models) ---
    def load_model(self, model_path: str, model_type: str, *, compile_model: bool = False) -> R:
        body = {"model_path": model_path, "model_type": model_type, "compile_model": compile_model}
        return self._call("POST", "/api/inference/models/load", body)

    def list_models(self) -> R:
        return self._call("GET", "/api/inference/models/list")

    def model_info(self, model_id: str | int) -> R:
        return self._call("GET", _path("api", "inference", "models", model_id, "info"))

    def model_metrics(self, model_id: str | int) -> R:
        return self._call("GET", _path("api", "inference", "models", model_id, "metrics"))

    def unload_model(self, model_id: str | int) -> R:
        return self._call("DELETE", _path("api", "inference", "models", model_id))

    def reload_model(self, model_id: str | int) -> R:
        return self._call("POST", _path("api", "inference", "models", model_id, "reload"))

    # --- seed 002: engine and monitoring ---
    def engine_status(self) -> R:
        return self._call("GET", "/api/inference/engine/status")

    def engine_config(self) -> R:
        return self._call("GET", "/api/inference/engine/config")

    def update_engine_config(self, **changes: int) -> R:
        """e.g. `max_batch_size=32, batch_timeout_ms=2`: stored, applied on every replica."""
        return self._call("PUT", "/api/inference/engine/config", changes)

    def restart_engine(self) -> R:
        return self._call("POST", "/api/inference/engine/restart")

    def clear_engine_cache(self) -> R:
        return self._call("DELETE", "/api/inference/engine/cache")

    def performance(self) -> R:
        return self._call("GET", "/api/inference/metrics/performance")

    def resources(self) -> R:
        return self._call("GET", "/api/inference/metrics/resources")

    def engine_health(self) -> R:
        return self._call("GET", "/api/inference/health")

    # --- registry, projects, slots, keys, A/B (/api/v1) ---
    def register_model(
        self, triton_name: str, *, name: str | None = None, project_id: int | None = None
    ) -> R:
        body = _without_none({"triton_name": triton_name, "name": name, "project_id": project_id})
        return self._call("POST", "/api/v1/models", body)

    def registered_models(self) -> R:
        return self._call("GET", "/api/v1/models")

    def registered_model(self, model_id: int) -> R:
        return self._call("GET", _path("api", "v1", "models", model_id))

    def delete_model(self, model_id: int) -> R:
        return self._call("DELETE", _path("api", "v1", "models", model_id))

    def create_project(self, name: str, *, sticky: bool = False) -> R:
        return self._call("POST", "/api/v1/projects", {"name": name, "sticky": sticky})

    def projects(self) -> R:
        return self._call("GET", "/api/v1/projects")

    def project(self, project_id: int) -> R:
        return self._call("GET", _path("api", "v1", "projects", project_id))

    def create_slot(
        self,
        project_id: int,
        name: str,
        model_id: int,
        weight: int,
        *,
        active: bool = True,
        is_control: bool = False,
    ) -> R:
        body = {
            "name": name,
            "model_id": model_id,
            "weight": weight,
            "active": active,
            "is_control": is_control,
        }
        return self._call("POST", _path("api", "v1", "projects", project_id, "slots"), body)

    def slots(self, project_id: int) -> R:
        return self._call("GET", _path("api", "v1", "projects", project_id, "slots"))

    def update_slot(self, slot_id: int, **changes: Any) -> R:
        return self._call("PATCH", _path("api", "v1", "slots", slot_id), changes)

    def create_key(
        self,
        scopes: Sequence[str],
        *,
        name: str = "",
        project_id: int | None = None,
        rate_limit: str | None = None,
    ) -> R:
        body = _without_none(
            {
                "name": name,
                "scopes": list(scopes),
                "project_id": project_id,
                "rate_limit": rate_limit,
            }
        )
        return self._call("POST", "/api/v1/keys", body)

    def keys(self) -> R:
        return self._call("GET", "/api/v1/keys")

    def revoke_key(self, key_id: int) -> R:
        return self._call("DELETE", _path("api", "v1", "keys", key_id))

    def record_conversions(self, events: Sequence[dict[str, Any]]) -> R:
        """Conversion events (`project`, `deployment_slot`, `user_id`, `item_id`,
        `event_type`, `recommendation_request_id`); duplicates count once."""
        return self._call("POST", "/api/v1/conversion_event/batch/", list(events))

    def ab_results(self, project_id: int) -> R:
        return self._call("GET", _path("api", "v1", "projects", project_id, "ab_results"))

    def promote(self, project_id: int, slot_id: int | None = None) -> R:
        """Make `slot_id` (default: the A/B winner) take all the traffic."""
        path = _path("api", "v1", "projects", project_id, "promote")
        return self._call("POST", path, _without_none({"slot_id": slot_id}))


def _decoded(response: httpx.Response) -> JSON:
    if response.is_error:
        raise ConchError.from_response(response)
    if not response.content:
        return None
    return response.json()


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


class Client(_Api[JSON]):
    """Blocking client; one connection pool, closed by `close()` or `with`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def _send(self, request: Request) -> JSON:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self._http.request(
                    request.method,
                    request.path,
                    json=request.json,
                    params=request.params,
                    headers=request.headers,
                )
            except httpx.TransportError as exc:
                error = exc
            wait = self.retry.wait_after(attempt, request, response, error)
            if wait is None:
                if error is not None:
                    raise error
                assert response is not None
                return _decoded(response)
            attempt += 1
            self._sleep(wait)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_Api[Awaitable[JSON]]):
    """The same endpoints, each a coroutine; `async with AsyncClient(...) as conch:`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    async def _send(self, request: Request) -> JSON:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    json=request.json,
                    params=request.params,
                    headers=request.headers,
                )
            except httpx.TransportError as exc:
                error = exc
            wait = self.retry.wait_after(attempt, request, response, error)
            if wait is None:
                if error is not None:
                    raise error
                assert response is not None
                return _decoded(response)
            attempt += 1
            await self._sleep(wait)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
