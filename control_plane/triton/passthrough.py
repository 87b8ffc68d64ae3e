"""Forward one HTTP request to Triton as it came, and bring back Triton's answer.

The Open Inference Protocol door (`control_plane/v2`) speaks the same protocol
as Triton's HTTP endpoint, and Triton already parses and validates every v2
body (JSON tensors, the binary tensor extension, classification, parameters).
So once Conch has checked the key, the limit and the model's visibility, the
caller's bytes go to Triton unchanged and Triton's status, content headers and
body come back unchanged: no tensor is decoded or re-encoded in Python, and a
feature Triton adds to its protocol works through Conch without a change here.

Measured (tritonclient.http, concurrency 1, iris classifier, a 2-core machine
under other load, so read the figures as rough): Triton direct p50 0.6-1.1 ms;
through Conch's /v2 door 0.6-1.1 ms more, of which about 0.25 ms is the Redis
round trip of the rate limit (0.6-0.85 ms more with limits off); the rest is the
extra HTTP hop and FastAPI's routing. Decoding the JSON tensors into numpy and
encoding the answer again would add, per request, 7 us of CPU at 1 row, 33 us at
64 rows and 0.74 ms at 1000 rows, and would lose whatever the decoder does not
know (classification, BYTES layouts, parameters).

Only the headers that describe the body travel (`FORWARDED_REQUEST_HEADERS`,
`RETURNED_RESPONSE_HEADERS`): never the caller's key, never Triton's address.
The connections are `http_pool.py`'s pool (shared with `http_infer.py`): one
serves one exchange at a time and is dropped after any error, timeout or
`Connection: close`. Transport failures are Conch's 503 (unreachable) and 504 (deadline); Triton's
error answers are mapped by `answer_error`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from control_plane.core import tracing
from control_plane.core.errors import (
    BadRequestError,
    ConchError,
    NotFoundError,
    TritonError,
    TritonTimeoutError,
    TritonUnavailableError,
)
from control_plane.triton.errors import short_reason
from control_plane.triton.http_pool import FailureKind, Headers, TritonHttpFailure, TritonHttpPool

# What describes a v2 body: its type, its compression, where its JSON header ends
# (the binary tensor extension), and which compression the caller accepts back.
FORWARDED_REQUEST_HEADERS = frozenset(
    (b"content-type", b"content-encoding", b"accept-encoding", b"inference-header-content-length")
)
RETURNED_RESPONSE_HEADERS = frozenset(
    (b"content-type", b"content-encoding", b"inference-header-content-length")
)

# Triton prefixes some reasons with its own request id, which is never set here.
_TRITON_REQUEST_ID = re.compile(r"^\[request id: [^\]]*\]\s*")
# How Triton's HTTP frontend begins the reason for a body it could not parse.
_PARSE_FAILURES = ("failed to parse", "unable to parse")
# No complete answer from Triton, as Conch's error: 504, 503, 502.
_FAILURE_ERRORS: dict[FailureKind, type[TritonError]] = {
    "deadline": TritonTimeoutError,
    "unreachable": TritonUnavailableError,
    "unreadable": TritonError,
}


@dataclass(slots=True)
class TritonAnswer:
    status: int
    headers: Headers = field(default_factory=list)  # only RETURNED_RESPONSE_HEADERS
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 200

    def reason(self) -> str:
        """Triton's `{"error": ...}` text on one line, without paths or addresses."""
        try:
            text = str(orjson.loads(self.body).get("error", ""))
        except (orjson.JSONDecodeError, AttributeError):
            text = self.body[:500].decode(errors="replace")
        return short_reason(_TRITON_REQUEST_ID.sub("", text)) or f"HTTP {self.status}"


def answer_error(answer: TritonAnswer, action: str) -> ConchError:
    """Triton's error answer as Conch's error. Triton answers 400 for requests it
    cannot take, and 500 for a body its HTTP frontend cannot parse ("failed to parse
    the request JSON buffer", "Unable to parse 'data': ..."): both are the caller's
    400. Unknown model or version: 404. Anything else is Triton's failure (a model
    that failed while running, say): 503 when it says unavailable, else 502."""
    reason = answer.reason()
    unparsable = reason.lower().startswith(_PARSE_FAILURES)
    if answer.status == 400 or (answer.status == 500 and unparsable):
        return BadRequestError(reason)
    if answer.status == 404:
        return NotFoundError(reason)
    status = f"HTTP {answer.status}"
    if answer.status == 503:
        return TritonUnavailableError(f"Triton {action} failed: {reason}", triton_status=status)
    return TritonError(f"Triton {action} failed: {reason}", triton_status=status)


class TritonPassthrough(TritonHttpPool):
    """Callers' requests forwarded on a pool of connections to Triton's HTTP port
    (`url`: host:port, `http://` optional)."""

    async def forward(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        timeout_s: float | None = None,
    ) -> TritonAnswer:
        """Send `method target` with the caller's body-describing headers and body.

        `target` is the path (and query) on Triton, already percent-encoded.
        """
        if tracing.tracer is None:
            return await self._forward(_request(method, target, headers, body), timeout_s)
        attributes = {"http.request.method": method, "url.path": target}
        with tracing.client_span("triton forward", attributes) as traceparent:
            if traceparent is not None:  # Triton's spans join the trace
                headers = [*headers, (b"traceparent", traceparent.encode())]
            return await self._forward(_request(method, target, headers, body), timeout_s)

    async def _forward(self, request: bytes, timeout_s: float | None) -> TritonAnswer:
        try:
            answer = await self.exchange(
                request, wanted_headers=RETURNED_RESPONSE_HEADERS, timeout_s=timeout_s
            )
        except TritonHttpFailure as exc:
            raise _FAILURE_ERRORS[exc.kind](str(exc)) from exc
        return TritonAnswer(answer.status, answer.headers, answer.body)


def _request(
    method: str, target: str, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> bytes:
    # The caller's header values come from a parsed HTTP request (no CR or LF).
    lines = [
        f"{method} {target} HTTP/1.1\r\nHost: triton\r\nContent-Length: {len(body)}\r\n".encode()
    ]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(b"\r\n")
    return b"".join([*lines, body])


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The caller's headers (ASGI: lower-case names) that describe its body."""
    return [(name, value) for name, value in headers if name in FORWARDED_REQUEST_HEADERS]
