"""Verify a presented key: format check, short in-process cache, one indexed lookup.

The cache maps HMAC(token) -> Principal for `key_cache_ttl_s`; a `key_revoked`
event drops the key's entries on every replica, so revocation does not wait for
the TTL. Expiry is checked on every request, cached or not.

A cached verification touches no database: a session is opened only on a cache
miss, and `last_used_at` is written in the background, off the request's path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core import metrics
from control_plane.core.errors import AuthenticationError
from control_plane.core.settings import default
from control_plane.core.single_flight import SingleFlight
from control_plane.db.base import utcnow
from control_plane.db.models import ApiKey
from control_plane.events.schemas import KeyRevoked
from control_plane.keys import tokens
from control_plane.keys.schemas import Principal

logger = logging.getLogger(__name__)
_CACHE_HIT, _CACHE_MISS = metrics.cache_results("api_keys")


class KeyVerifier:
    def __init__(
        self,
        secret_key: str,
        ttl_s: float,
        max_entries: int = default("key_cache_max_entries"),
        events_current: Callable[[], bool] = lambda: True,
        *,
        last_used_interval_s: float = default("key_last_used_interval_s"),
    ) -> None:
        self._secret = secret_key
        # While revocations from other replicas cannot reach us, nothing is cached.
        self._events_current = events_current
        self._ttl = ttl_s
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._last_used_written: dict[int, float] = {}
        # last_used_at is bookkeeping: one write per key per replica per interval.
        self._last_used_interval = last_used_interval_s
        self._background: set[asyncio.Task[None]] = set()
        # One SQL lookup per digest at a time, however many requests miss together.
        self._flights: SingleFlight[str, Principal] = SingleFlight()

    async def verify(
        self, sessionmaker: async_sessionmaker[AsyncSession], token: str | None
    ) -> Principal:
        if not token:
            raise AuthenticationError("missing API key (X-API-Key header)")
        if not tokens.is_well_formed(token):
            raise AuthenticationError("invalid API key")
        digest = tokens.hash_token(self._secret, token)
        trusted = self._events_current()
        principal = self._cached(digest) if trusted else None
        if principal is not None:
            _CACHE_HIT.inc()
        else:
            _CACHE_MISS.inc()
            principal = await self._flights.load(
                digest, lambda: self._load_and_store(sessionmaker, digest, trusted)
            )
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise AuthenticationError("API key expired")
        self._touch(sessionmaker, principal.key_id)
        return principal

    def _cached(self, digest: str) -> Principal | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        principal, stored_at = entry
        if time.monotonic() - stored_at > self._ttl:
            del self._cache[digest]
            return None
        return principal

    def _store(self, digest: str, principal: Principal) -> None:
        self._cache[digest] = (principal, time.monotonic())
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    async def _load_and_store(
        self, sessionmaker: async_sessionmaker[AsyncSession], digest: str, trusted: bool
    ) -> Principal:
        async with sessionmaker() as session:
            principal = await self._load(session, digest)
        if trusted:
            self._store(digest, principal)
        return principal

    async def _load(self, session: AsyncSession, digest: str) -> Principal:
        row = await session.scalar(select(ApiKey).where(ApiKey.token_hash == digest))
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise AuthenticationError("invalid API key")
        if row.revoked_at is not None:
            raise AuthenticationError("API key revoked")
        return Principal(
            key_id=row.id,
            name=row.name,
            scopes=frozenset(row.scopes.split()),
            project_id=row.project_id,
            expires_at=row.expires_at,
            rate_limit=row.rate_limit,
        )

    def _touch(self, sessionmaker: async_sessionmaker[AsyncSession], key_id: int) -> None:
        now = time.monotonic()
        last = self._last_used_written.get(key_id)
        if last is not None and now - last < self._last_used_interval:
            return
        self._last_used_written[key_id] = now
        task = asyncio.create_task(self._write_last_used(sessionmaker, key_id))
        self._background.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _write_last_used(sessionmaker: async_sessionmaker[AsyncSession], key_id: int) -> None:
        try:
            async with sessionmaker() as session, session.begin():
                await session.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow())
                )
        except SQLAlchemyError as exc:  # bookkeeping only: never fail a request for it
            logger.warning("could not record last_used_at of key %s: %s", key_id, exc)

    async def drain(self) -> None:
        """Wait for background writes (shutdown, tests)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def forget(self, key_id: int) -> None:
        self._flights.detach()  # a lookup already running may predate the revocation
        for digest in [d for d, (p, _) in self._cache.items() if p.key_id == key_id]:
            del self._cache[digest]

    def clear(self) -> None:
        """Drop every cached verification (after missing events, revocations may hide)."""
        self._flights.detach()
        self._cache.clear()

    async def on_key_revoked(self, event: KeyRevoked) -> None:
        self.forget(event.key_id)

    def __contains__(self, key_id: object) -> bool:
        return any(p.key_id == key_id for p, _ in self._cache.values())
