"""A local OTLP/HTTP traces endpoint for the instrumentation pass: spans counted, not kept.

It stands where a collector would, so the traced arms pay for exporting (OTLP
encoding, the POSTs) as they would in production. Spans are counted by one
resource attribute (`ARM_ATTRIBUTE`, set through OTEL_RESOURCE_ATTRIBUTES by
each control plane), so the pass can show which arm exported what.
"""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ARM_ATTRIBUTE = "conch.bench.arm"
_ANSWER = ExportTraceServiceResponse().SerializeToString()


class SpanSink:
    """POST /v1/traces (protobuf), on a free loopback port, from `with` to its end."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                sink._count(ExportTraceServiceRequest.FromString(body))
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(_ANSWER)))
                self.end_headers()
                self.wfile.write(_ANSWER)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per export would drown the suite's output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT names it."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def counts(self) -> dict[str, int]:
        """Spans received so far, by the exporting plane's arm ("" when it named none)."""
        with self._lock:
            return dict(self._counts)

    def _count(self, request: ExportTraceServiceRequest) -> None:
        counted: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            arm = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == ARM_ATTRIBUTE
                ),
                "",
            )
            counted[arm] += sum(len(s.spans) for s in resource_spans.scope_spans)
        with self._lock:
            self._counts.update(counted)

    def __enter__(self) -> SpanSink:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
