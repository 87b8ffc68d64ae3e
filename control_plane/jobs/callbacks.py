"""Delivering an async task's result to its callback_url: signed, retried, recorded.

Each attempt re-checks the URL (the allow-list may have changed, the name may point
elsewhere now) and connects to the addresses that check judged (callback_urls.py);
it is signed afresh (`X-Conch-Signature`, keys/webhooks.py) and numbered
(`X-Conch-Delivery-Attempt`). A 2xx is delivered. Connection failures, timeouts,
5xx, 408 and 429 are retried with exponential backoff and jitter, a Retry-After
honoured, until `retry_for_s` after the first attempt; any other answer (another
4xx, a redirect, which is never followed) is the receiver's final word. Every
attempt is recorded (`Delivery`, stored on the task) with its status code or a fixed
error text, never what the receiver sent, whose body is not even read.

The client should be built with `trust_env=False` (no proxy from the environment
between Conch and a host it checked); the secret is the submitting key's
`webhook_secret(SECRET_KEY, key_id)`.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx
from pydantic import BaseModel

from control_plane.core.callback_hosts import CallbackAllowList
from control_plane.jobs.callback_urls import CallbackRefusedError as CallbackRefusedError
from control_plane.jobs.callback_urls import CallbackTarget, resolve_callback
from control_plane.jobs.callback_urls import check_callback_url as check_callback_url
from control_plane.keys.webhooks import SIGNATURE_HEADER, sign

ATTEMPT_HEADER = "X-Conch-Delivery-Attempt"
_USER_AGENT = "Conch-Callbacks/1"
_RETRIED_STATUSES = frozenset({408, 429})
_MAX_DOUBLINGS = 30  # beyond this the delay is max_delay_s anyway; no float overflow


class DeliveryAttempt(BaseModel):
    number: int
    at: str  # ISO 8601, UTC, when the attempt started
    status_code: int | None = None  # the receiver's answer; None: it gave none
    error: str | None = None  # why the attempt failed, in Conch's words
    duration_ms: float


class Delivery(BaseModel):
    # "retrying" only in the snapshots `on_attempt` receives; the result is final.
    status: Literal["retrying", "delivered", "failed"]
    attempts: list[DeliveryAttempt]
    delivered_at: str | None = None


@dataclass(frozen=True)
class _Outcome:
    attempt: DeliveryAttempt
    verdict: Literal["delivered", "retry", "stop"]
    retry_after_s: float | None = None


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    secret: bytes,
    *,
    allowed: CallbackAllowList,
    retry_for_s: float,
    timeout_s: float = 5.0,
    first_delay_s: float = 0.5,
    max_delay_s: float = 30.0,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    on_attempt: Callable[[Delivery], Awaitable[None]] | None = None,
) -> Delivery:
    """POST `body` (JSON) to `url` until a receiver takes it or the budget is spent.

    No attempt starts later than `retry_for_s` after the first. `on_attempt` sees the
    delivery so far after each attempt that will be retried (to show it on the task).
    """
    if first_delay_s <= 0 or max_delay_s < first_delay_s:
        raise ValueError("deliver needs 0 < first_delay_s <= max_delay_s")
    deadline = clock() + retry_for_s
    attempts: list[DeliveryAttempt] = []
    while True:
        outcome = await _attempt(
            client, url, body, secret, allowed, len(attempts) + 1, timeout_s, clock
        )
        attempts.append(outcome.attempt)
        if outcome.verdict == "delivered":
            return Delivery(status="delivered", attempts=attempts, delivered_at=outcome.attempt.at)
        if outcome.verdict == "stop":
            break
        delay = _backoff_s(len(attempts), first_delay_s, max_delay_s)
        if outcome.retry_after_s is not None:
            delay = max(delay, outcome.retry_after_s)  # the receiver said when: not sooner
        if clock() + delay > deadline:
            break
        if on_attempt is not None:
            await on_attempt(Delivery(status="retrying", attempts=list(attempts)))
        await sleep(delay)
    return Delivery(status="failed", attempts=attempts)


async def _attempt(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    secret: bytes,
    allowed: CallbackAllowList,
    number: int,
    timeout_s: float,
    clock: Callable[[], float],
) -> _Outcome:
    started_at = clock()
    started = time.perf_counter()

    def record(status_code: int | None = None, error: str | None = None) -> DeliveryAttempt:
        return DeliveryAttempt(
            number=number,
            at=_iso(started_at),
            status_code=status_code,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    try:
        target = await resolve_callback(url, allowed, resolve_timeout_s=timeout_s)
    except CallbackRefusedError as refused:
        # A name that does not resolve now may again; anything else will not change.
        verdict: Literal["retry", "stop"] = "retry" if refused.reason == "unresolvable" else "stop"
        return _Outcome(record(error=f"refused: {refused.message}"), verdict)
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        SIGNATURE_HEADER: sign(secret, body, int(clock())),
        ATTEMPT_HEADER: str(number),
    }
    try:
        async with asyncio.timeout(timeout_s):  # the whole attempt, however slowly it drips
            status_code, retry_after = await _post(client, target, headers, body, timeout_s)
    except (httpx.TransportError, TimeoutError) as exc:
        return _Outcome(record(error=_error_text(exc)), "retry")
    if 200 <= status_code < 300:
        return _Outcome(record(status_code), "delivered")
    if status_code >= 500 or status_code in _RETRIED_STATUSES:
        return _Outcome(record(status_code), "retry", _retry_after_s(retry_after, clock()))
    error = "redirect not followed" if 300 <= status_code < 400 else None
    return _Outcome(record(status_code, error), "stop")


async def _post(
    client: httpx.AsyncClient,
    target: CallbackTarget,
    headers: dict[str, str],
    body: bytes,
    timeout_s: float,
) -> tuple[int, str | None]:
    """The receiver's status and Retry-After, from the first address that connects;
    the response body is left unread."""
    refused: httpx.ConnectError | None = None
    for address in target.addresses:
        pinned_url, extensions = target.pinned(address)
        try:
            async with client.stream(
                "POST",
                pinned_url,
                content=body,
                headers=headers,
                extensions=extensions,
                follow_redirects=False,
                timeout=timeout_s,
            ) as response:
                return response.status_code, response.headers.get("retry-after")
        except httpx.ConnectError as exc:
            refused = exc  # nothing was sent: another address of the host may answer
    assert refused is not None  # a target has at least one address
    raise refused


def _error_text(exc: Exception) -> str:
    # Fixed texts: an exception's own message may name internal addresses.
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "TLS handshake failed" if _caused_by_ssl(exc) else "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "invalid HTTP response"
    return "connection lost"


def _caused_by_ssl(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _backoff_s(attempts: int, first_delay_s: float, max_delay_s: float) -> float:
    base = min(max_delay_s, first_delay_s * 2.0 ** min(attempts - 1, _MAX_DOUBLINGS))
    # Jitter: receivers that failed together are not all retried at the same instant.
    return base * random.uniform(0.5, 1.0)


def _retry_after_s(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now (RFC 9110: delay-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")
