"""Traces: Conch's spans and the embedded Triton's join one trace, the caller's.

A real Triton started as `conch serve --trace` starts it exports its spans to a
local OTLP receiver, and so does an app with OTEL_EXPORTER_OTLP_ENDPOINT set;
Triton's span of a request must be the child of Conch's span of its call, which
proves the traceparent travelled (over HTTP, the v2 passthrough and gRPC).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pydantic
import pytest
from fastapi import FastAPI

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.app import create_app
from control_plane.cli import serve
from control_plane.core import tracing
from control_plane.core.settings import Settings
from control_plane.triton.client import TritonGateway
from control_plane.triton.http_infer import Tensors, _encode
from tests.control_plane.conftest import make_key, make_project, stack_settings
from tests.control_plane.core.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import until, until_served

MODEL = "cptrace_rec"
TRITON = "triton-inference-server"  # the service name Triton's spans carry


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_triton(model_repository: Path, receiver: OtlpReceiver) -> Iterator[EmbeddedTriton]:
    write_recommender(model_repository, MODEL, 7)
    with pytest.MonkeyPatch.context() as env:
        # Both exporters (Triton's and the SDK's) read it: spans leave at once.
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        server = EmbeddedTriton.on_free_ports(
            model_repository, trace_url=f"{receiver.endpoint}/v1/traces"
        )
        with server:
            yield server


@pytest.fixture(scope="module")
async def app(
    database_url: str,
    redis_url: str,
    traced_triton: EmbeddedTriton,
    model_repository: Path,
    receiver: OtlpReceiver,
) -> AsyncIterator[FastAPI]:
    settings = stack_settings(database_url, redis_url, traced_triton, model_repository)
    application = create_app(settings.model_copy(update={"otlp_endpoint": receiver.endpoint}))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        yield c


@pytest.fixture(scope="module")
async def keys(app: FastAPI) -> dict[str, str]:
    return {"admin": await make_key(app, ["admin"]), "predict": await make_key(app, ["predict"])}


@pytest.fixture(scope="module")
async def model_id(client: httpx.AsyncClient, keys: dict[str, str]) -> int:
    response = await client.post(
        "/api/v1/models", json={"triton_name": MODEL}, headers={"X-API-Key": keys["admin"]}
    )
    assert response.status_code == 201, response.text
    served: int = response.json()["id"]
    await until_served(client, served, keys["predict"])  # loaded in Triton
    return served


def _caller(sampled: bool = True) -> tuple[str, str, str]:
    """A caller's trace id, span id and the traceparent naming them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


async def _joined(receiver: OtlpReceiver, trace_id: str, conch_call: str) -> list[ReceivedSpan]:
    """The trace's spans once Triton's request span, a child of Conch's span named
    `conch_call`, has arrived."""

    def spans_of(service: str, name: str) -> list[ReceivedSpan]:
        return [s for s in receiver.spans(trace_id) if s.service == service and s.name == name]

    async def joined() -> bool:
        calls = {s.span_id for s in spans_of(tracing.SERVICE_NAME, conch_call)}
        return any(s.parent_id in calls for s in spans_of(TRITON, "InferRequest"))

    def arrived() -> str:
        return ", ".join(f"{s.service}:{s.name}" for s in receiver.spans(trace_id)) or "none"

    try:
        await until(joined, "")
    except AssertionError:
        raise AssertionError(
            f"Triton's spans never joined trace {trace_id} under {conch_call!r}; "
            f"arrived: {arrived()}"
        ) from None
    return receiver.spans(trace_id)


def _named(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


async def test_the_fast_lane_keeps_the_callers_trace_and_triton_joins_it(
    client: httpx.AsyncClient, receiver: OtlpReceiver, keys: dict[str, str], model_id: int
) -> None:
    trace_id, caller_span, traceparent = _caller()
    response = await client.post(
        f"/inference/predict/{model_id}",
        json={"user_id": "u1"},
        headers={"X-API-Key": keys["predict"], "traceparent": traceparent},
    )
    assert response.status_code == 200, response.text
    spans = await _joined(receiver, trace_id, "triton infer")
    server = _named(spans, "POST /inference/predict/{model_id}")
    assert server.parent_id == caller_span
    assert server.attributes["http.route"] == "/inference/predict/{model_id}"
    for name in ("conch.auth", "conch.rate_limit", "triton infer"):
        assert _named(spans, name).parent_id == server.span_id, name
    assert _named(spans, "conch.rate_limit").attributes["conch.rate_limit.allowed"] is True
    call = _named(spans, "triton infer")
    assert call.attributes == {"triton.model_name": MODEL, "network.protocol.name": "http"}
    model_span = _named(spans, MODEL)  # Triton's span of the model's execution
    assert model_span.service == TRITON


async def test_a_request_without_a_traceparent_starts_the_trace_triton_joins(
    client: httpx.AsyncClient, receiver: OtlpReceiver, keys: dict[str, str], model_id: int
) -> None:
    project = await make_project(client, keys["admin"], [("main", model_id, 1)])
    path = f"/inference/predict/project/{project.id}"
    response = await client.post(
        path, json={"user_id": "u2"}, headers={"X-API-Key": keys["predict"]}
    )
    assert response.status_code == 200, response.text

    def served() -> list[ReceivedSpan]:
        return [s for s in receiver.spans() if s.attributes.get("url.path") == path]

    async def arrived() -> bool:
        return bool(served())

    await until(arrived, "the request's server span never arrived")
    [server] = served()
    assert server.parent_id == ""  # a root: Conch began the trace
    spans = await _joined(receiver, server.trace_id, "triton infer")
    routing = _named(spans, "conch.routing")
    assert routing.attributes["conch.model_id"] == model_id
    assert routing.attributes["conch.slot_id"] == project.slots["main"]


async def test_the_v2_passthrough_passes_the_trace_to_triton(
    client: httpx.AsyncClient, receiver: OtlpReceiver, keys: dict[str, str], model_id: int
) -> None:
    trace_id, caller_span, traceparent = _caller()
    body = {"inputs": [{"name": "USER_INDEX", "shape": [1, 1], "datatype": "INT64", "data": [3]}]}
    response = await client.post(
        f"/v2/models/{MODEL}/infer",
        json=body,
        headers={"Authorization": f"Bearer {keys['predict']}", "traceparent": traceparent},
    )
    assert response.status_code == 200, response.text
    spans = await _joined(receiver, trace_id, "triton forward")
    assert _named(spans, "POST /v2/models/{name}/infer").parent_id == caller_span


async def test_fastapi_routes_are_traced_with_their_key_check(
    client: httpx.AsyncClient, receiver: OtlpReceiver, keys: dict[str, str], model_id: int
) -> None:
    trace_id, caller_span, traceparent = _caller()
    response = await client.get(
        f"/api/v1/models/{model_id}",
        headers={"X-API-Key": keys["admin"], "traceparent": traceparent},
    )
    assert response.status_code == 200, response.text

    async def arrived() -> bool:
        return {"GET /api/v1/models/{model_id}", "conch.auth"} <= {
            s.name for s in receiver.spans(trace_id)
        }

    await until(arrived, "the FastAPI route's spans never arrived")
    assert _named(receiver.spans(trace_id), "GET /api/v1/models/{model_id}").parent_id == (
        caller_span
    )


async def test_grpc_calls_carry_the_trace_as_metadata(
    app: FastAPI, traced_triton: EmbeddedTriton, receiver: OtlpReceiver, model_id: int
) -> None:
    gateway = TritonGateway(traced_triton.grpc_url, timeout_s=30, load_timeout_s=60)
    try:
        with tracing.span("test.grpc") as parent:
            assert parent is not None
            rows: Tensors = {"USER_INDEX": np.array([[1]], dtype=np.int64)}
            await gateway.infer_loaded(MODEL, rows, ["SCORE"])
    finally:
        await gateway.close()
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    spans = await _joined(receiver, trace_id, "triton infer")
    assert _named(spans, "triton infer").attributes["network.protocol.name"] == "grpc"


async def test_an_unsampled_caller_is_traced_by_neither(
    client: httpx.AsyncClient, receiver: OtlpReceiver, keys: dict[str, str], model_id: int
) -> None:
    unsampled, _, not_sampled = _caller(sampled=False)
    sampled, _, traceparent = _caller()
    for header in (not_sampled, traceparent):
        response = await client.post(
            f"/inference/predict/{model_id}",
            json={"user_id": "u1"},
            headers={"X-API-Key": keys["predict"], "traceparent": header},
        )
        assert response.status_code == 200, response.text
    # Each exporter sends spans in the order they ended: the sampled request's
    # arriving means the unsampled one's would have arrived before.
    await _joined(receiver, sampled, "triton infer")
    assert receiver.spans(unsampled) == []


def test_off_nothing_is_made_and_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "tracer", None)
    assert tracing.span("a") is tracing.span("b")  # one shared context, no span
    with tracing.client_span("triton infer", {}) as traceparent:
        assert traceparent is None
    rows: Tensors = {"USER_INDEX": np.array([[1]], dtype=np.int64)}
    assert b"traceparent" not in _encode(MODEL, rows, ["SCORE"])
    sent = _encode(MODEL, rows, ["SCORE"], traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert b"\r\ntraceparent: 00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01\r\n\r\n" in sent


def test_the_endpoint_follows_the_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert tracing.traces_endpoint(None, None) is None
    assert tracing.traces_endpoint("http://c:4318/", None) == "http://c:4318/v1/traces"
    assert tracing.traces_endpoint("http://c:4318", "http://t/traces") == "http://t/traces"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.traces_endpoint("http://c:4318", None) is None
    with pytest.raises(pydantic.ValidationError, match="OTLP over HTTP"):
        Settings(otlp_endpoint="collector:4318")


def test_serve_trace_defaults_to_a_local_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.setenv(name, "")  # so that what `_trace_url` sets is undone
        monkeypatch.delenv(name)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert serve._trace_url() == f"{serve.LOCAL_COLLECTOR}/v1/traces"
    # Set for the control plane's workers, which read it.
    assert os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == serve.LOCAL_COLLECTOR
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/v1/traces")
    assert serve._trace_url() == "http://t:4318/v1/traces"
