"""The error statuses an operation declares in OpenAPI, each with the one error body.

Generated clients (and schemathesis, in the tests) read these: a status the API
can answer must be declared here or by the route's policy (keys/deps.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """The one error body of the whole API (seed 002), as OpenAPI documents it."""

    error: str = Field(description="Error class, e.g. ModelNotFoundError")
    message: str
    details: dict[str, Any] = Field(description="What the error concerns (ids, limits, fields)")
    timestamp: str = Field(description="ISO 8601, UTC")
    request_id: str


_MEANINGS = {
    400: "A request the model cannot take (e.g. wrong feature count)",
    401: "Missing, malformed, unknown, expired or revoked API key",
    403: "The key lacks the scope, or a project-restricted key asked for a global operation",
    404: "Not found, or outside the key's project (the two look the same)",
    409: "Conflicting change",
    413: "Request body over CONCH_MAX_BODY_BYTES",
    415: "Request body is not JSON",
    422: "Request validation failed",
    429: "Over the key's rate limit (Retry-After, X-RateLimit-*)",
    500: "The model could not be loaded (Triton's reason in the message)",
    502: "Triton failed",
    503: "Triton unreachable or the model still loading (Retry-After)",
    504: "Triton timed out",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each with the error body."""
    return {code: {"model": ErrorBody, "description": _MEANINGS[code]} for code in codes}


TRITON_ERRORS = (500, 502, 503, 504)
