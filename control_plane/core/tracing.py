"""OpenTelemetry traces of each request, exported over OTLP/HTTP when configured.

On (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, and
not `OTEL_SDK_DISABLED=true`), the app builds one `TracerProvider` per process
(a BatchSpanProcessor sending protobuf over HTTP) and adds `TracingMiddleware`,
which opens each request's server span from the caller's W3C `traceparent` (so a
caller's trace id is kept) and names it by its route template, the fast lane's
or FastAPI's (`request_metrics.route_template`). The spans below it: the key
check and the rate limit (`keys/access.py`), routing, and the Triton call, whose
context goes to Triton as a `traceparent` HTTP header or gRPC metadata, so that
Triton's own spans (`conch serve --trace`) join the trace.

Not FastAPI's native telemetry: on this project's 2-core test machine it cost
about 45 us of CPU per request even for requests it did not sample (plus FastAPI's
operation spans), against about 17 us for this middleware and the helpers below.

Off, the middleware is not in the stack, and each helper compares `tracer` with
None once: `span` returns one shared context that does nothing, and no span
object is made. On, a request the sampler leaves out (OTEL_TRACES_SAMPLER, or a
caller's unsampled traceparent) gets no child spans either: they would record
nothing. Each recorded span costs about 80 us of CPU here (SDK and OTLP
encoding), so at saturation sample a fraction
(`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`).

The SDK reads the other standard variables itself: OTEL_SERVICE_NAME (default
`conch`), OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER
(default: a caller's sampling decision, else every request), OTEL_BSP_*.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.core.request_metrics import UNMATCHED, route_template

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "conch"

# Conch's tracer while an app that traces is running (app.py's lifespan); None: off.
tracer: Tracer | None = None

_NO_SPAN: AbstractContextManager[Any] = contextlib.nullcontext()
_Result = TypeVar("_Result")


def traces_endpoint(endpoint: str | None, traces_endpoint: str | None) -> str | None:
    """Where spans go, from OTEL_EXPORTER_OTLP_ENDPOINT (a base: `/v1/traces` is
    appended) and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the whole URL, which wins);
    None when neither is set or OTEL_SDK_DISABLED is true."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if traces_endpoint:
        return traces_endpoint
    if endpoint:
        return f"{endpoint.rstrip('/')}/v1/traces"
    return None


def create_provider(endpoint: str) -> TracerProvider:
    """A provider exporting to `endpoint` in batches, from a thread of its own."""
    # Imported here, where tracing begins: nothing else needs the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def start(provider: TracerProvider) -> None:
    global tracer
    tracer = provider.get_tracer("control_plane")


async def stop(provider: TracerProvider) -> None:
    """Export what is left (a blocking call, hence the thread) and stop tracing."""
    global tracer
    tracer = None
    await asyncio.to_thread(provider.shutdown)


def _unrecorded() -> bool:
    """Inside a span that records nothing (not sampled), where a child would not
    either; outside any span a new trace may begin."""
    current = trace.get_current_span()
    return not current.is_recording() and current.get_span_context().is_valid


def span(name: str) -> AbstractContextManager[Span | None]:
    """A child of the current span, current inside the block (an exception marks it
    failed); off, one shared context that does nothing and yields None."""
    if tracer is None or _unrecorded():
        return _NO_SPAN
    return tracer.start_as_current_span(name)


def span_until(
    future: asyncio.Future[_Result],
    name: str,
    attributes_of: Callable[[_Result], Attributes] | None = None,
) -> None:
    """A span from now until `future` is done: work that runs while the request goes
    on (the rate limit's Redis round trip), with attributes read from its result."""
    if tracer is None or _unrecorded():
        return
    started = tracer.start_span(name)

    def end(done: asyncio.Future[_Result]) -> None:
        if attributes_of is not None and not done.cancelled() and done.exception() is None:
            started.set_attributes(attributes_of(done.result()) or {})
        started.end()

    future.add_done_callback(end)


def client_span(name: str, attributes: Attributes) -> AbstractContextManager[str | None]:
    """A client span around a call to Triton, yielding the `traceparent` to send with
    it; off, or not sampled, it yields None: nothing to send. Triton traces every
    request that carries a context whatever its own rate, so an unsampled one must not."""
    if tracer is None or _unrecorded():
        return _NO_SPAN
    return _client_span(tracer, name, attributes)


@contextlib.contextmanager
def _client_span(active: Tracer, name: str, attributes: Attributes) -> Iterator[str | None]:
    with active.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as call:
        yield traceparent(call)


def traceparent(of: Span) -> str | None:
    """W3C trace context (version 00) naming `of` as the parent; None unless sampled."""
    ids = of.get_span_context()
    if not ids.is_valid or not ids.trace_flags.sampled:
        return None
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"


_CALLER_HEADERS = frozenset((b"traceparent", b"tracestate"))
_W3C = TraceContextTextMapPropagator()


class TracingMiddleware:
    """The server span of each HTTP request, the parent of Conch's spans. app.py adds
    it only when tracing is configured: off, it is not in the stack at all."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        active = tracer
        if active is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        server = active.start_span(
            method,
            context=_caller_context(scope["headers"]),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        # Current even when not sampled: its children see it and make no spans.
        token = context.attach(trace.set_span_in_context(server))
        if not server.is_recording():
            try:
                await self.app(scope, receive, send)
            finally:
                context.detach(token)
            return
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":  # to find the request's log line
                        server.set_attribute("conch.request_id", value.decode("latin-1"))
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            server.record_exception(exc)
            server.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            context.detach(token)
            _end_server_span(server, scope, method, status)


def _caller_context(headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The caller's W3C trace context, if it sent one (None: a new trace begins)."""
    carrier = {
        name.decode(): value.decode("latin-1") for name, value in headers if name in _CALLER_HEADERS
    }
    return _W3C.extract(carrier) if carrier else None


def _end_server_span(server: Span, scope: Scope, method: str, status: int) -> None:
    route = route_template(scope)
    if route != UNMATCHED:
        server.update_name(f"{method} {route}")
        server.set_attribute("http.route", route)
    if status:
        server.set_attribute("http.response.status_code", status)
        if status >= 500:
            server.set_status(StatusCode.ERROR)
    server.end()
