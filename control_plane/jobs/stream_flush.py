"""A replica's share of the streams' flushing: one model call per batch, results by row.

A batch is flushed where it was taken: a `send` that filled its stream's
buffer takes it on the replica that answered the send; a buffer whose oldest
row waited batch_timeout_ms is taken by whichever replica's poll (every
`stream_flush_poll_s`) sees it first. The take is atomic (`streams_scripts.py`),
so each row goes to Triton in one batch only. A batch its replica did not store
within `stream_flush_claim_after_s` (the replica stopped) goes back to the
buffer and is flushed again by a live one.

The batch's rows go to the model core in one `predict` call (the gateway splits
it at the model's max_batch_size); rows sent as records and rows sent as lists
are two calls, as `predict` takes one form at a time. A failed call (Triton's
502/504, a model deleted since) gives each row of the batch the error body as
its result, so results stay in sequence order and none is left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.core.components import Components
from control_plane.core.errors import (
    ServiceUnavailableError,
    TritonUnavailableError,
    error_body,
)
from control_plane.jobs.streams import Batch, StreamStore
from control_plane.model_core.catalog import ModelCatalog
from control_plane.model_core.outputs import Payload
from control_plane.model_core.predict import predict
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway

logger = logging.getLogger(__name__)

_TAKES_PER_POLL = 64  # due streams taken per poll; the rest on the next one
# Claims last stream_flush_claim_after_s (30 s by default): looking once a second is plenty.
_CLAIMS_EVERY_S = 1.0
# With nothing due soon: a buffer filled on another replica (whose own flusher takes
# it) is looked at by this one at least this often, should that replica stop.
_IDLE_POLL_S = 1.0


def row_results(payload: Payload, seqs: list[int], seconds: float) -> dict[int, dict[str, Any]]:
    """Split one prediction of `len(seqs)` rows into each row's own result."""
    completed_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    n = len(seqs)
    results = {}
    for index, seq in enumerate(seqs):
        result: dict[str, Any] = {"sequence_id": seq}
        predictions = payload.get("predictions") or []
        if len(predictions) == n:
            result["prediction"] = predictions[index]
        if len(payload.get("probabilities") or []) == n:
            result["probabilities"] = payload["probabilities"][index]
        if "outputs" in payload:
            result["outputs"] = {
                name: values[index] if len(values) == n else values
                for name, values in payload["outputs"].items()
            }
        result.update(inference_time=seconds, batch_rows=n, completed_at=completed_at)
        results[seq] = result
    return results


class StreamFlusher:
    def __init__(self, store: StreamStore, components: Components, *, poll_s: float) -> None:
        self.store = store
        self._components = components
        self._poll_s = poll_s
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._poll_loop(), name="conch-stream-flusher")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop polling; give flushes under way `grace_s`. What is cut off stays
        claimed in Redis and another replica flushes it again."""
        self._stopping = True
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        if self._flushes:
            _, late = await asyncio.wait(self._flushes, timeout=grace_s)
            for flush in late:
                flush.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def launch(self, batch: Batch, session: Mapping[str, str]) -> asyncio.Task[None]:
        """Flush `batch` in the background (the caller may await the task)."""
        flush = asyncio.create_task(self.flush(batch, session), name=f"conch-flush-{batch.sid}")
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)
        return flush

    async def _poll_loop(self) -> None:
        # The flag too: a cancel can be lost inside the Redis client (seen in the tests:
        # the loop polled on after stop() had cancelled it).
        claims_at = time.monotonic()
        wait_s = self._poll_s
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=wait_s)
            self._woken.clear()
            wait_s = _IDLE_POLL_S
            try:
                wait_s = await self._until_next_due()
                for sid in await self.store.due(_TAKES_PER_POLL):
                    batch = await self.store.take_due(sid)
                    if batch is None:
                        continue  # another replica was first, or the stream expired
                    session = await self.store.get(sid)
                    if session is not None:
                        self.launch(batch, session)
                if time.monotonic() < claims_at:
                    continue
                claims_at = time.monotonic() + _CLAIMS_EVERY_S
                for claim in await self.store.expired_claims(_TAKES_PER_POLL):
                    if await self.store.reclaim(claim):
                        logger.info("flushing %s again (its replica did not answer)", claim)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next poll tries again
                logger.warning("polling streams to flush failed: %s", exc)

    def wake(self) -> None:
        """Rows were buffered here: look again for when the next buffer falls due."""
        self._woken.set()

    async def _until_next_due(self) -> float:
        """Seconds to the earliest due buffer of any replica's streams, at least one
        poll and at most `_IDLE_POLL_S`: an idle replica asks Redis once a second, not
        every `poll_s`."""
        due_ms = await self.store.next_due_ms()
        if due_ms is None:
            return _IDLE_POLL_S
        return min(max(due_ms / 1000 - time.time(), self._poll_s), _IDLE_POLL_S)

    async def flush(self, batch: Batch, session: Mapping[str, str]) -> None:
        try:
            results = await self._predict(batch, session)
            await self.store.store(batch, results)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis failed: the batch stays claimed and is flushed again after the claim.
            logger.exception("flushing stream %s failed", batch.sid)

    async def _predict(self, batch: Batch, session: Mapping[str, str]) -> dict[int, dict[str, Any]]:
        seqs = sorted(batch.rows)
        records = [seq for seq in seqs if isinstance(batch.rows[seq], dict)]
        lists = [seq for seq in seqs if not isinstance(batch.rows[seq], dict)]
        parts = [part for part in (records, lists) if part]
        answers = await asyncio.gather(*(self._predict_rows(batch, session, p) for p in parts))
        return {seq: result for answer in answers for seq, result in answer.items()}

    async def _predict_rows(
        self, batch: Batch, session: Mapping[str, str], seqs: list[int]
    ) -> dict[int, dict[str, Any]]:
        components = self._components
        # Half the claim: a batch still waiting for its model is not flushed twice.
        deadline = time.monotonic() + self.store.claim_after_s / 2
        while True:
            try:
                catalog = components.get(ModelCatalog)
                handle = await catalog.get(
                    components.get(async_sessionmaker), int(session["model_id"])
                )
                prediction = await predict(
                    components.get(TritonGateway),
                    handle,
                    [batch.rows[seq] for seq in seqs],
                    stats=components.get(InferenceStats),
                    return_probabilities=session.get("return_probabilities") == "1",
                    max_rows=len(seqs),
                )
                return row_results(prediction.payload, seqs, prediction.seconds)
            except (ServiceUnavailableError, TritonUnavailableError) as exc:
                # The model is loading (or Triton restarting): wait, as a client would.
                wait = float((exc.headers or {}).get("Retry-After", 1))
                if time.monotonic() + min(wait, 1.0) >= deadline:
                    return _failed(seqs, exc)
                await asyncio.sleep(min(wait, 1.0))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return _failed(seqs, exc)


def _failed(seqs: list[int], exc: BaseException) -> dict[int, dict[str, Any]]:
    body = error_body(exc)
    return {seq: {"sequence_id": seq, "error": body} for seq in seqs}
