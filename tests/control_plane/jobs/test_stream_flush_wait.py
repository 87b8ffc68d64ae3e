"""How long the stream flusher sleeps: until the earliest due buffer, within one
poll and one second, so that an idle replica does not ask Redis every poll."""

from __future__ import annotations

import time
from typing import Any, cast

from control_plane.core.components import Components
from control_plane.jobs.stream_flush import StreamFlusher
from control_plane.jobs.streams import StreamStore

POLL_S = 0.005


class _DueAt:
    def __init__(self, due_ms: float | None) -> None:
        self.due_ms = due_ms

    async def next_due_ms(self) -> float | None:
        return self.due_ms


def _flusher(due_ms: float | None) -> StreamFlusher:
    store = cast(StreamStore, cast(Any, _DueAt(due_ms)))
    return StreamFlusher(store, Components(), poll_s=POLL_S)


async def test_with_nothing_buffered_the_flusher_looks_once_a_second() -> None:
    assert await _flusher(None)._until_next_due() == 1.0


async def test_a_buffer_due_soon_is_waited_for_and_one_overdue_is_taken_at_once() -> None:
    now_ms = time.time() * 1000
    assert await _flusher(now_ms - 50)._until_next_due() == POLL_S
    soon = await _flusher(now_ms + 200)._until_next_due()
    assert 0.1 < soon <= 0.2
    assert await _flusher(now_ms + 60_000)._until_next_due() == 1.0
