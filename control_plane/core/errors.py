"""One error base carrying its HTTP status, one handler, one body for every error.

Body (seed 002): {"error", "message", "details", "timestamp", "request_id"}.
Expected conditions are 4xx; Triton failures are 502/503/504; nothing leaks a traceback.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.core.request_id import current_request_id
from control_plane.core.responses import OrjsonResponse

logger = logging.getLogger(__name__)


class ConchError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequestError(ConchError):
    status_code = 400


class AuthenticationError(ConchError):
    status_code = 401
    headers = {"WWW-Authenticate": "ApiKey"}


class PermissionDeniedError(ConchError):
    status_code = 403


class NotFoundError(ConchError):
    status_code = 404


class ModelNotFoundError(NotFoundError):
    pass


class UserNotInModelError(NotFoundError):
    pass


class ProjectNotFoundError(NotFoundError):
    pass


class SlotNotFoundError(NotFoundError):
    pass


class NoActiveSlotsError(NotFoundError):
    pass


class KeyNotFoundError(NotFoundError):
    pass


# One message per kind of resource: an id the caller may not see must read exactly
# like an id that does not exist (security: no probing for other projects' ids).
def model_not_found(model_id: int) -> ModelNotFoundError:
    return ModelNotFoundError(f"model {model_id} not found", model_id=model_id)


def project_not_found(project_id: int) -> ProjectNotFoundError:
    return ProjectNotFoundError(f"project {project_id} not found", project_id=project_id)


def slot_not_found(slot_id: int) -> SlotNotFoundError:
    return SlotNotFoundError(f"deployment slot {slot_id} not found", slot_id=slot_id)


def key_not_found(key_id: int) -> KeyNotFoundError:
    return KeyNotFoundError(f"API key {key_id} not found", key_id=key_id)


class ConflictError(ConchError):
    status_code = 409


class ValidationError(ConchError):
    status_code = 422


class UnsupportedMediaTypeError(ConchError):
    status_code = 415


class PayloadTooLargeError(StarletteHTTPException):
    """413, raised while the body is read. An HTTPException, not a ConchError: FastAPI
    turns any other exception from reading the body into a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class RateLimitExceededError(ConchError):
    status_code = 429

    def __init__(self, message: str, headers: dict[str, str], **details: Any) -> None:
        super().__init__(message, **details)
        self.headers = headers


# Every 503 tells the client when to try again (RFC 9110 Retry-After). Without a
# better estimate: a few seconds, about what an embedded Triton or Redis takes to
# be restarted by `conch serve`.
DEFAULT_RETRY_AFTER_S = 5


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class ServiceUnavailableError(ConchError):
    status_code = 503
    headers = retry_after(DEFAULT_RETRY_AFTER_S)

    def __init__(
        self, message: str, *, retry_after_s: float = DEFAULT_RETRY_AFTER_S, **details: Any
    ) -> None:
        super().__init__(message, **details)
        self.headers = retry_after(retry_after_s)


class ModelLoadError(ConchError):
    """The model exists but could not be loaded (seed 000: 500)."""

    status_code = 500


class TritonError(ConchError):
    """Triton answered with a failure (502)."""

    status_code = 502


class TritonUnavailableError(TritonError):
    status_code = 503
    headers = retry_after(DEFAULT_RETRY_AFTER_S)


class TritonTimeoutError(TritonError):
    status_code = 504


def error_response(
    status_code: int,
    error: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> OrjsonResponse:
    body = {
        "error": error,
        "message": message,
        "details": details or {},
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "request_id": current_request_id(),
    }
    return OrjsonResponse(body, status_code=status_code, headers=headers)


_HTTP_NAMES = {
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: "PayloadTooLargeError",
}


def conch_error_response(exc: ConchError) -> OrjsonResponse:
    return error_response(
        exc.status_code, type(exc).__name__, exc.message, exc.details, exc.headers
    )


async def _conch_error(_: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, ConchError)
    return conch_error_response(exc)


def validation_error_response(
    errors: Sequence[Mapping[str, Any]], location: tuple[str, ...] = ()
) -> OrjsonResponse:
    """422 listing each field's problem; `location` prefixes pydantic's own paths."""
    listed = [
        {"loc": [*location, *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    return error_response(422, "ValidationError", "request validation failed", {"errors": listed})


async def _validation_error(_: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error_response(exc.errors())


async def _http_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI's answer to a body that is not UTF-8: invalid JSON, like any other.
        invalid = {"loc": ("body",), "msg": "body is not UTF-8", "type": "json_invalid"}
        return validation_error_response([invalid])
    if exc.status_code == 405:
        # Starlette's Allow names only the first route that matched the path.
        allow = ", ".join(_methods_by_path(request.app).get(_template(request) or "", ()))
        exc = StarletteHTTPException(405, exc.detail, headers={"Allow": allow})
    return http_error_response(exc)


def _methods_by_path(app: FastAPI) -> dict[str, tuple[str, ...]]:
    """Path template -> its methods, from the app's own OpenAPI document (cached)."""
    cached: dict[str, tuple[str, ...]] | None = getattr(app.state, "methods_by_path", None)
    if cached is None:
        paths = app.openapi()["paths"]
        cached = {path: tuple(sorted(m.upper() for m in ops)) for path, ops in paths.items()}
        app.state.methods_by_path = cached
    return cached


def _template(request: Request) -> str | None:
    for template in _methods_by_path(request.app):
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            return template
    return None


def http_error_response(exc: StarletteHTTPException) -> OrjsonResponse:
    name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
    details = {"max_bytes": exc.max_bytes} if isinstance(exc, PayloadTooLargeError) else None
    return error_response(exc.status_code, name, str(exc.detail), details, headers=exc.headers)


async def _integrity_error(_: Request, exc: Exception) -> OrjsonResponse:
    # A race the services' own checks could not see (two requests creating the same
    # name at once): the database's constraint decides, and the loser gets a 409.
    logger.info("integrity error: %s", exc)
    return error_response(409, "ConflictError", "the request conflicts with existing data")


async def _out_of_range(request: Request, exc: Exception) -> OrjsonResponse:
    # A number beyond what the database column holds (an id of 20 digits): PostgreSQL
    # says so with a DataError, SQLite's driver with an OverflowError.
    if isinstance(exc, OverflowError) and "SQLite INTEGER" not in str(exc):
        return unexpected_error_response(exc)
    return error_response(
        422,
        "ValidationError",
        "a number in the request is out of range",
        {"path": request.url.path},
    )


async def _redis_unavailable(_: Request, exc: Exception) -> OrjsonResponse:
    # Redis refused, dropped or timed out a command (async tasks, streams): passing.
    logger.warning("redis unavailable: %s", exc)
    return conch_error_response(ServiceUnavailableError("Redis is unavailable; retry shortly"))


async def _database_unavailable(_: Request, exc: Exception) -> OrjsonResponse:
    # The database refused, dropped or timed out the connection (or SQLite is locked):
    # the server's trouble, and a passing one; the client retries after a pause.
    logger.warning("database unavailable: %s", exc)
    return conch_error_response(
        ServiceUnavailableError("the database is unavailable; retry shortly")
    )


def unexpected_error_response(exc: Exception) -> OrjsonResponse:
    # Logged with its traceback here; the client sees only the request id to quote.
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "InternalServerError", "internal server error")


def error_body(exc: BaseException) -> dict[str, Any]:
    """The body the API would answer `exc` with, for an error reported later (a
    failed multi-batch item, a failed async task)."""
    if isinstance(exc, ConchError):
        response = conch_error_response(exc)
    else:
        response = unexpected_error_response(
            exc if isinstance(exc, Exception) else RuntimeError(exc)
        )
    body: dict[str, Any] = orjson.loads(response.body)
    return body


ErrorConverter = Callable[[Request, Exception], Awaitable[OrjsonResponse]]

# The one conversion of exceptions to error responses: FastAPI's handlers and the
# prediction fast lane (inference/lane.py) both answer through it.
_CONVERTERS: dict[type[Exception], ErrorConverter] = {
    ConchError: _conch_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    IntegrityError: _integrity_error,
    DataError: _out_of_range,
    OverflowError: _out_of_range,
    OperationalError: _database_unavailable,
    InterfaceError: _database_unavailable,
    PoolTimeoutError: _database_unavailable,
    RedisConnectionError: _redis_unavailable,
    RedisTimeoutError: _redis_unavailable,
}


async def handled_error_response(request: Request, exc: Exception) -> OrjsonResponse | None:
    """The response the installed handlers give `exc`, chosen by its class's MRO as
    Starlette chooses; None for one they leave to the request-id middleware's 500."""
    for kind in type(exc).__mro__:
        convert = _CONVERTERS.get(kind)
        if convert is not None:
            return await convert(request, exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    for kind, convert in _CONVERTERS.items():
        app.add_exception_handler(kind, convert)
