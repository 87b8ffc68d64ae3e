"""A request's priority level reaches Triton's scheduler: urgent work overtakes a queue of low.

The paced model (python_models.py) takes one request at a time, 20 ms each, so
its dynamic batcher's queue is the only place requests can be reordered. Low
requests flood it first; urgent ones sent once the flood is queued must finish
ahead of most of it. Sent as FIFO, they would finish last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVEL_COUNT, PRIORITY_LEVELS
from control_plane.triton.client import TritonGateway
from tests.control_plane.triton.gateways import PROTOCOLS, gateway_over, loaded
from tests.control_plane.triton.python_models import (
    TAG_INPUT,
    TAG_OUTPUT,
    TEXT_INPUT,
    TEXT_MAX_BATCH,
    UPPER_OUTPUT,
    write_paced_model,
    write_text_model,
)
from tests.control_plane.waiting import until

PACED, TEXT = "cptest_gw_paced", "cptest_gw_prio_text"
LOW, URGENT = PRIORITY_LEVELS["low"], PRIORITY_LEVELS["urgent"]
FLOOD, URGENT_REQUESTS = 24, 3
# Low requests finished before the urgent ones are sent: the flood is in Triton's queue.
FLOOD_STARTED = 2


@pytest.fixture(scope="module")
async def models(model_repository: Path, triton: EmbeddedTriton) -> AsyncIterator[None]:
    write_paced_model(
        model_repository, PACED, levels=PRIORITY_LEVEL_COUNT, default_level=DEFAULT_PRIORITY_LEVEL
    )
    write_text_model(model_repository, TEXT)
    async with loaded(triton, PACED, TEXT):
        yield


@pytest.fixture(params=PROTOCOLS)
async def gateway(
    request: pytest.FixtureRequest, triton: EmbeddedTriton, models: None
) -> AsyncIterator[TritonGateway]:
    # A queue of a few seconds: Triton 2.51's priority queue spends far more than the
    # model's 20 ms between requests (about 0.1-0.3 s here), so the deadline is generous.
    gateway = gateway_over(request.param, triton, timeout_s=120, coalesce_in_flight=2)
    yield gateway
    await gateway.close()


async def test_urgent_requests_overtake_a_queue_of_low_ones(gateway: TritonGateway) -> None:
    finished: list[str] = []

    async def send(tag: int, priority: int, label: str) -> None:
        rows = np.asarray([[tag]], dtype=np.int64)
        answer = await gateway.infer(PACED, {TAG_INPUT: rows}, [TAG_OUTPUT], priority=priority)
        assert answer[TAG_OUTPUT].tolist() == [[tag]]  # its own answer, not a neighbour's
        finished.append(label)

    flood = [asyncio.create_task(send(i, LOW, "low")) for i in range(FLOOD)]
    try:

        async def flood_queued() -> bool:
            return finished.count("low") >= FLOOD_STARTED

        await until(flood_queued, "the low requests never started")
        await asyncio.gather(*(send(1000 + i, URGENT, "urgent") for i in range(URGENT_REQUESTS)))
        low_before_urgent = finished.count("low")
        await asyncio.gather(*flood)
    finally:  # a failure must not leave the flood queued in front of the next test
        for task in flood:
            task.cancel()

    # In FIFO order every low request would be done first; by priority, only those
    # already running or finished when the urgent ones arrived (plus a little slack).
    assert low_before_urgent < FLOOD // 2, finished
    assert finished.count("low") == FLOOD


async def test_a_model_without_priority_levels_takes_any_priority(gateway: TritonGateway) -> None:
    rows = np.asarray([["a"], ["b"]], dtype=np.object_)
    for priority in (0, URGENT, LOW):
        answer = await gateway.infer(TEXT, {TEXT_INPUT: rows}, [UPPER_OUTPUT], priority=priority)
        assert answer[UPPER_OUTPUT][:, 0].tolist() == [b"A", b"B"]


async def test_rows_of_different_priorities_never_share_a_triton_request(
    gateway: TritonGateway,
) -> None:
    async def predict(word: str, priority: int) -> list[bytes]:
        rows = np.asarray([[word]], dtype=np.object_)
        answer = await gateway.infer_rows(
            TEXT, TEXT_INPUT, rows, [UPPER_OUTPUT], TEXT_MAX_BATCH, priority=priority
        )
        result: list[bytes] = answer[UPPER_OUTPUT][:, 0].tolist()
        return result

    words = [(f"w{i}", (LOW, URGENT)[i % 2]) for i in range(40)]
    answers = await asyncio.gather(*(predict(word, priority) for word, priority in words))
    assert answers == [[word.upper().encode()] for word, _ in words]

    coalescers = {key[-1]: c for key, c in gateway._coalescers.items() if key[0] == TEXT}
    assert set(coalescers) == {LOW, URGENT}  # one per priority level
    assert all(c.merged > 0 for c in coalescers.values())  # each merged its own requests
    assert sum(c.calls for c in coalescers.values()) < len(words)
