"""Console sign-in: an API key exchanged for a server-side session in Redis.

The browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie
(Secure over TLS); the key itself is posted once and never stored anywhere. Redis
holds, under a hash of the id, the key's id and the session's CSRF token, for the
session's TTL and never beyond the key's own expiry. Every request reads the key's
row again, so revoking a key (or its expiry) ends every session made with it at
once, on every replica. Keys are checked and rate limited by the API's own code
(`keys.access.Policy`, `keys.deps.enforce_rate_limit`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from control_plane.core.components import Components
from control_plane.core.errors import (
    AuthenticationError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from control_plane.core.settings import Settings
from control_plane.db.base import utcnow
from control_plane.db.models import ApiKey
from control_plane.keys.access import Policy
from control_plane.keys.deps import enforce_rate_limit
from control_plane.keys.schemas import Principal
from control_plane.ratelimit.limiter import RateLimiter

COOKIE = "conch_console"
# The sign-in form's token, before any session exists (double submit: cookie = field).
SIGN_IN_COOKIE = "conch_console_sign_in"
SIGN_IN_TTL_S = 3600
CSRF_FIELD = "csrf_token"
# Reading the console needs the read scope (admin implies it); writes check their own.
SIGN_IN = Policy("read", "any")


@dataclass(frozen=True)
class ConsoleSession:
    session_id: str  # the cookie's value; Redis knows only its hash
    principal: Principal
    csrf_token: str


def _redis(components: Components) -> Redis:
    redis = components.find(Redis)
    if redis is None:
        raise ServiceUnavailableError("console sessions need Redis (REDIS_URL)")
    return redis


def _record_key(components: Components, session_id: str) -> str:
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return f"conch:{components.get(Settings).deployment_id}:console:session:{digest}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _key_problem(row: ApiKey | None) -> str | None:
    if row is None or row.revoked_at is not None:
        return "the API key of this session was revoked: sign in again"
    if row.expires_at is not None and row.expires_at <= utcnow():
        return "the API key of this session expired: sign in again"
    return None


def _principal(row: ApiKey) -> Principal:
    return Principal(
        key_id=row.id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        project_id=row.project_id,
        expires_at=row.expires_at,
        rate_limit=row.rate_limit,
    )


async def _rate_limited(components: Components, principal: Principal) -> None:
    if components.get(Settings).rate_limit_enabled:
        limiter = components.get(RateLimiter)
        enforce_rate_limit(await limiter.hit(principal.key_id, principal.rate_limit))


async def sign_in(components: Components, settings: Settings, token: str | None) -> tuple[str, int]:
    """A new session for the key (401 if it is not valid, 403 without the read scope):
    its id, for the cookie, and its life in seconds."""
    principal, limit_check = await SIGN_IN.admit(components, token or None)
    if limit_check is not None:
        enforce_rate_limit(await limit_check)
    await SIGN_IN.authorize(components, principal, None)
    ttl_s = settings.console_session_ttl_s
    if principal.expires_at is not None:
        ttl_s = min(ttl_s, int((principal.expires_at - utcnow()).total_seconds()))
    if ttl_s < 1:
        raise AuthenticationError("API key expired")
    session_id = secrets.token_urlsafe(32)
    record = ["key_id", str(principal.key_id), "csrf", secrets.token_urlsafe(32)]
    record += ["created_at", utcnow().isoformat()]
    async with _redis(components).pipeline(transaction=True) as pipe:
        pipe.hset(_record_key(components, session_id), items=record)
        pipe.expire(_record_key(components, session_id), ttl_s)
        await pipe.execute()
    return session_id, ttl_s


async def current_session(components: Components, session_id: str | None) -> ConsoleSession:
    """The signed-in caller (401 without a live session or with a dead key)."""
    if not session_id:
        raise AuthenticationError("sign in to use the console")
    redis = _redis(components)
    record_key = _record_key(components, session_id)
    record = {_text(k): _text(v) for k, v in (await redis.hgetall(record_key)).items()}
    if "key_id" not in record or "csrf" not in record:
        raise AuthenticationError("the console session ended: sign in again")
    sessionmaker: async_sessionmaker[AsyncSession] = components.get(async_sessionmaker)
    async with sessionmaker() as session:
        row = await session.get(ApiKey, int(record["key_id"]))
    problem = _key_problem(row)
    if problem is not None or row is None:
        await redis.delete(record_key)
        raise AuthenticationError(problem or "sign in again")
    principal = _principal(row)
    await _rate_limited(components, principal)
    return ConsoleSession(session_id, principal, record["csrf"])


async def sign_out(components: Components, session_id: str) -> None:
    await _redis(components).delete(_record_key(components, session_id))


def check_csrf(expected: str, submitted: str | None) -> None:
    """403 unless the form carries the session's token (compared in constant time)."""
    if not submitted or not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise PermissionDeniedError(
            "the form's CSRF token is missing or wrong: reload the page and submit it again"
        )


def cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path") or "/console")


def _secure(request: Request, settings: Settings) -> bool:
    if settings.console_secure_cookie is not None:
        return settings.console_secure_cookie
    return request.url.scheme == "https"


def set_cookie(
    response: Response,
    request: Request,
    settings: Settings,
    name: str,
    value: str,
    max_age: int,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=cookie_path(request),
        secure=_secure(request, settings),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE,
        path=cookie_path(request),
        secure=_secure(request, settings),
        httponly=True,
        samesite="strict",
    )
