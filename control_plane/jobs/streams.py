"""Streaming sessions (seed 002's `/api/inference/stream/`), shared by every replica.

A session lives in Redis only, so that any replica takes any call for any
stream: a `send` on one replica, its flush on another, `results` on a third.

Layout, under one hash tag (as `TaskKeys`) so a Redis Cluster keeps it on one slot.
A stream is named `<owner key id>:<stream_id>` (its "sid"): a stream id is
scoped per key, and two keys may use the same one without clashing.
- `session:<sid>`: a hash: owner key, project, model, buffer_size,
  batch_timeout_ms, created and last activity, closed flag, rows in flight.
- `rows:<sid>`: the buffered rows, sequence id -> the row (JSON).
- `seqs:<sid>`: every accepted sequence id (a sorted set): duplicates, and the
  order results are read in.
- `results:<sid>`: sequence id -> its result (JSON); the newest
  `stream_max_results` are kept.
- `batch:<sid>:<token>`: rows one replica took and is predicting.
- `owned:<key id>`: a key's open streams, each scored by when it expires.
- `due`: sids with buffered rows, scored by when batch_timeout_ms passes for
  the oldest of them; `claims`: taken batches, scored by when another replica
  may take them back (`stream_flush_claim_after_s`).
- channel `ready:<sid>`: a message whenever results are stored or the stream closes.

Every key of a session expires `stream_idle_ttl_s` after its last send or read
(each of them refreshes all of them); a closed stream is read until then, but
reads no longer refresh it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from control_plane.jobs import streams_scripts as scripts
from control_plane.jobs.queue import now_iso


def new_stream_id() -> str:
    return "stream_" + secrets.token_hex(12)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The Redis key names of one deployment's streams."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"conch:{{{self.namespace}}}:streams:"

    def session(self, sid: str) -> str:
        return f"{self.prefix}session:{sid}"

    def rows(self, sid: str) -> str:
        return f"{self.prefix}rows:{sid}"

    def seqs(self, sid: str) -> str:
        return f"{self.prefix}seqs:{sid}"

    def results(self, sid: str) -> str:
        return f"{self.prefix}results:{sid}"

    def batch(self, sid: str, token: str) -> str:
        return f"{self.prefix}batch:{sid}:{token}"

    def owned(self, key_id: int | str) -> str:
        return f"{self.prefix}owned:{key_id}"

    def due(self) -> str:
        return f"{self.prefix}due"

    def claims(self) -> str:
        return f"{self.prefix}claims"

    def channel(self, sid: str) -> str:
        return f"{self.prefix}ready:{sid}"


def stream_sid(key_id: int | str, stream_id: str) -> str:
    return f"{key_id}:{stream_id}"


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows one replica took from a stream's buffer, to predict in one model call."""

    sid: str
    token: str
    rows: dict[int, Any]  # sequence id -> the row, as sent

    @property
    def claim(self) -> str:
        return f"{self.sid}|{self.token}"


@dataclass(frozen=True, slots=True)
class Sent:
    # "buffered", "taken" (this send filled the buffer: `batch` is to flush now),
    # "gone", "closed", "duplicate" (`detail`: the sequence id), "full"
    outcome: str
    pending: int = 0
    batch: Batch | None = None
    detail: int = 0


@dataclass(frozen=True, slots=True)
class ResultsRead:
    results: list[dict[str, Any]]
    pending: int
    closed: bool


def _batch(sid: str, token: str, flat: Sequence[Any]) -> Batch | None:
    if not flat:
        return None
    rows = {int(_text(flat[i])): orjson.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
    return Batch(sid, token, rows)


class StreamStore:
    """Start, send, read and close streams; take, store and take back batches."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        idle_ttl_s: int,
        max_per_key: int,
        max_pending: int,
        max_results: int,
        claim_after_s: float,
        listen_redis: Redis | None = None,
    ) -> None:
        self.redis = redis
        self.keys = StreamKeys(namespace)
        self.idle_ttl_s = idle_ttl_s
        self.max_per_key = max_per_key
        self.max_pending = max_pending
        self.max_results = max_results
        self.claim_after_s = claim_after_s
        self._listen_redis = listen_redis or redis
        self._start = redis.register_script(scripts.START)
        self._send = redis.register_script(scripts.SEND)
        self._take_due = redis.register_script(scripts.TAKE_DUE)
        self._store = redis.register_script(scripts.STORE)
        self._reclaim = redis.register_script(scripts.RECLAIM)
        self._close = redis.register_script(scripts.CLOSE)
        self._read = redis.register_script(scripts.READ)

    def _claim_until(self) -> int:
        return _now_ms() + int(self.claim_after_s * 1000)

    async def start(
        self, key_id: int, stream_id: str, fields: Mapping[str, str]
    ) -> tuple[str, str]:
        """ "started", "exists" (the key has this stream, open or closed) or "key_full";
        and the stream's created_at."""
        sid = stream_sid(key_id, stream_id)
        now = _now_ms()
        created_at = now_iso()
        stored = {
            **fields,
            "stream_id": stream_id,
            "key_id": str(key_id),
            "created_at": created_at,
            "last_activity_ms": str(now),
            "closed": "0",
            "inflight": "0",
        }
        answer = await self._start(
            keys=[self.keys.session(sid), self.keys.owned(key_id)],
            args=[
                stream_id,
                now,
                self.idle_ttl_s,
                self.max_per_key,
                *(item for pair in stored.items() for item in pair),
            ],
        )
        return _text(answer), created_at

    async def get(self, sid: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.keys.session(sid))  # type: ignore[misc]
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    async def send(self, session: Mapping[str, str], first: int, rows: Sequence[Any]) -> Sent:
        sid = stream_sid(session["key_id"], session["stream_id"])
        token = secrets.token_hex(8)
        k = self.keys
        answer = await self._send(
            keys=[
                *(k.session(sid), k.rows(sid), k.seqs(sid), k.results(sid)),
                *(k.owned(session["key_id"]), k.due(), k.batch(sid, token), k.claims()),
            ],
            args=[
                _now_ms(),
                self.idle_ttl_s,
                first,
                self.max_pending,
                session["stream_id"],
                sid,
                f"{sid}|{token}",
                self._claim_until(),
                session["created_at"],
                *(orjson.dumps(row) for row in rows),
            ],
        )
        outcome = _text(answer[0])
        if outcome in ("gone", "closed"):
            return Sent(outcome)
        if outcome == "duplicate":
            return Sent(outcome, detail=int(_text(answer[1])))
        pending = int(_text(answer[1]))
        return Sent(outcome, pending, _batch(sid, token, answer[2:]))

    async def due(self, limit: int) -> list[str]:
        """Streams whose oldest buffered row has waited batch_timeout_ms."""
        due = await self.redis.zrangebyscore(self.keys.due(), "-inf", _now_ms(), 0, limit)
        return [_text(sid) for sid in due]

    async def next_due_ms(self) -> float | None:
        """When the earliest buffered row of any stream falls due (ms since the epoch)."""
        first = await self.redis.zrange(self.keys.due(), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def take_due(self, sid: str) -> Batch | None:
        token = secrets.token_hex(8)
        k = self.keys
        flat = await self._take_due(
            keys=[k.session(sid), k.rows(sid), k.batch(sid, token), k.claims(), k.due()],
            args=[sid, f"{sid}|{token}", self._claim_until(), self.idle_ttl_s, _now_ms()],
        )
        return _batch(sid, token, flat)

    async def store(self, batch: Batch, results: Mapping[int, dict[str, Any]]) -> bool:
        """Record a batch's results; False when it was taken back meanwhile (its
        replica took too long: another flushes it) or the stream expired."""
        k, sid = self.keys, batch.sid
        pairs = [item for seq, result in results.items() for item in (seq, orjson.dumps(result))]
        stored = await self._store(
            keys=[
                k.session(sid),
                k.batch(sid, batch.token),
                k.results(sid),
                k.seqs(sid),
                k.claims(),
            ],
            args=[batch.claim, self.max_results, k.channel(sid), *pairs],
        )
        return bool(stored)

    async def expired_claims(self, limit: int) -> list[str]:
        claims = await self.redis.zrangebyscore(self.keys.claims(), "-inf", _now_ms(), 0, limit)
        return [_text(claim) for claim in claims]

    async def reclaim(self, claim: str) -> int:
        """Put a batch whose replica stopped before storing it back in its buffer."""
        sid, _, token = claim.rpartition("|")
        k = self.keys
        returned = await self._reclaim(
            keys=[k.session(sid), k.batch(sid, token), k.rows(sid), k.due(), k.claims()],
            args=[claim, _now_ms(), sid],
        )
        return int(returned)

    async def close(self, session: Mapping[str, str]) -> tuple[str, Batch | None]:
        """ "closed" (with what was still buffered, to flush now), "already" or "gone"."""
        sid = stream_sid(session["key_id"], session["stream_id"])
        token = secrets.token_hex(8)
        k = self.keys
        answer = await self._close(
            keys=[
                *(k.session(sid), k.rows(sid), k.batch(sid, token), k.claims(), k.due()),
                k.owned(session["key_id"]),
            ],
            args=[
                *(sid, f"{sid}|{token}", self._claim_until(), self.idle_ttl_s, now_iso()),
                *(session["stream_id"], k.channel(sid)),
            ],
        )
        outcome = _text(answer[0])
        return outcome, _batch(sid, token, answer[1:]) if outcome == "closed" else None

    async def read(
        self, session: Mapping[str, str], cursor: int, limit: int, *, touch: bool
    ) -> ResultsRead | None:
        """Results from `cursor` on, in sequence order and contiguous; None once the
        stream expired."""
        sid = stream_sid(session["key_id"], session["stream_id"])
        k = self.keys
        answer = await self._read(
            keys=[
                k.session(sid),
                k.rows(sid),
                k.seqs(sid),
                k.results(sid),
                k.owned(session["key_id"]),
            ],
            args=[cursor, limit, self.idle_ttl_s, _now_ms(), session["stream_id"], int(touch)],
        )
        if answer is None:
            return None
        results = [orjson.loads(answer[i]) for i in range(3, len(answer), 2)]
        return ResultsRead(results, int(_text(answer[1])), _text(answer[0]) == "1")

    def subscribe_target(self, session: Mapping[str, str]) -> tuple[PubSub, str]:
        """A Pub/Sub (on the listening connection pool) and the stream's channel."""
        sid = stream_sid(session["key_id"], session["stream_id"])
        return self._listen_redis.pubsub(), self.keys.channel(sid)
