"""The admission gate: at most `limit` inside, the most urgent waiting enters first."""

from __future__ import annotations

import asyncio

from control_plane.model_core.admission import PriorityGate


async def test_the_most_urgent_waiting_prediction_enters_first() -> None:
    gate = PriorityGate(limit=1)
    entered: list[str] = []
    release = asyncio.Event()

    async def predict(label: str, level: int) -> None:
        async with gate.admitted(level):
            entered.append(label)
            await release.wait()

    first = asyncio.ensure_future(predict("first", 4))
    await asyncio.sleep(0)
    waiting = [
        asyncio.ensure_future(predict(label, level))
        for label, level in (("low-1", 4), ("normal", 3), ("low-2", 4), ("urgent", 1))
    ]
    await asyncio.sleep(0)
    assert entered == ["first"] and gate.inside == 1
    release.set()
    await asyncio.gather(first, *waiting)
    assert entered == ["first", "urgent", "normal", "low-1", "low-2"]
    assert gate.inside == 0


async def test_a_caller_that_gives_up_while_waiting_takes_no_place() -> None:
    gate = PriorityGate(limit=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.admitted(3):
            await release.wait()

    holder = asyncio.ensure_future(hold())
    await asyncio.sleep(0)
    impatient = asyncio.ensure_future(hold())
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    await holder
    assert impatient.cancelled() and gate.inside == 0
    async with gate.admitted(4):  # the place is free again, at once
        assert gate.inside == 1
