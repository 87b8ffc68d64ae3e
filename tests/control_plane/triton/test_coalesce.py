"""Concurrent prediction rows merged into fewer Triton calls, each caller getting its own rows."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI

from control_plane.triton.coalesce import Call, CallSlots, RowCoalescer, Tensors
from tests.control_plane.conftest import state_of
from tests.control_plane.waiting import until


async def test_concurrent_rows_share_triton_calls_and_get_their_own_answers(
    app: FastAPI, model_ids: dict[str, int]
) -> None:
    state = state_of(app)
    model = await state.models.get(state.sessionmaker, model_ids["a"])
    index = model.as_recommender()
    outputs = [index.items_output, index.scores_output]

    async def predict(user_row: int) -> Tensors:
        rows = np.asarray([[user_row]], dtype=np.int64)
        return await state.triton.infer_rows(
            model.triton_name, index.input_name, rows, outputs, model.max_batch_size
        )

    users = [i % len(index.user_index) for i in range(64)]
    alone = [await predict(user) for user in users[:8]]  # one at a time: nothing to merge
    coalescer = next(  # the default level's: other tests may have used other priorities
        c for k, c in state.triton._coalescers.items() if k[0] == model.triton_name and k[4] == 0
    )
    calls_before, merged_before = coalescer.calls, coalescer.merged
    together = await asyncio.gather(*(predict(user) for user in users))
    assert coalescer.calls - calls_before < len(users)
    assert coalescer.merged > merged_before
    for user, answer in zip(users, together, strict=True):
        expected = alone[users.index(user)] if user in users[:8] else await predict(user)
        for name in outputs:
            np.testing.assert_array_equal(answer[name], expected[name])


def _echo_call(log: list[int], in_flight: list[int]) -> Call:
    """A stand-in for Triton: doubles the rows, records batch sizes and overlap."""

    async def call(rows: npt.NDArray[np.generic], timeout_s: float | None) -> Tensors:
        log.append(len(rows))
        in_flight.append(in_flight[-1] + 1 if in_flight else 1)
        await asyncio.sleep(0.01)
        in_flight.append(in_flight[-1] - 1)
        return {"y": np.asarray(rows) * 2}

    return call


async def test_merged_calls_respect_max_rows_and_max_in_flight() -> None:
    sizes: list[int] = []
    overlap: list[int] = []
    coalescer = RowCoalescer(_echo_call(sizes, overlap), max_rows=8, max_in_flight=2)
    inputs = [np.full((1 + i % 3, 1), i) for i in range(40)]
    answers = await asyncio.gather(*(coalescer.submit(rows) for rows in inputs))
    for rows, answer in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(answer["y"], rows * 2)
    assert max(sizes) <= 8 and len(sizes) < len(inputs)
    assert max(overlap) <= 2


async def test_a_failed_call_fails_every_request_in_it_and_only_those() -> None:
    calls = 0

    async def flaky(rows: npt.NDArray[np.generic], timeout_s: float | None) -> Tensors:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:  # the first merged call
            raise RuntimeError("Triton said no")
        return {"y": rows}

    coalescer = RowCoalescer(flaky, max_rows=100, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.submit(np.zeros((1, 1))))
    await asyncio.sleep(0)  # the first goes straight through; the next three wait
    merged = [asyncio.ensure_future(coalescer.submit(np.zeros((1, 1)))) for _ in range(3)]
    assert (await first)["y"].shape == (1, 1)
    for waiting in merged:
        with pytest.raises(RuntimeError, match="Triton said no"):
            await waiting
    assert (await coalescer.submit(np.ones((2, 1))))["y"].shape == (2, 1)  # still serving


async def test_a_request_cancelled_while_waiting_is_left_out() -> None:
    sizes: list[int] = []
    coalescer = RowCoalescer(_echo_call(sizes, []), max_rows=100, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.submit(np.zeros((1, 1))))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(coalescer.submit(np.zeros((5, 1))))
    kept = asyncio.ensure_future(coalescer.submit(np.ones((2, 1))))
    await asyncio.sleep(0)
    gone.cancel()
    await first
    np.testing.assert_array_equal((await kept)["y"], np.full((2, 1), 2.0))
    assert sizes == [1, 2]  # the cancelled request's five rows never went out


async def test_requests_with_different_deadlines_go_in_different_calls() -> None:
    deadlines: list[tuple[int, float | None]] = []  # (rows, deadline) of each call

    async def call(rows: npt.NDArray[np.generic], timeout_s: float | None) -> Tensors:
        deadlines.append((len(rows), timeout_s))
        await asyncio.sleep(0.01)
        return {"y": rows}

    coalescer = RowCoalescer(call, max_rows=100, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.submit(np.zeros((1, 1))))
    await asyncio.sleep(0)  # the first goes straight through; the rest wait behind it
    waiting = [
        asyncio.ensure_future(coalescer.submit(np.zeros((1, 1)), timeout_s))
        for timeout_s in (None, None, 2.0, 2.0, 2.0, None)
    ]
    await asyncio.gather(first, *waiting)
    # In arrival order; a change of deadline starts a new call.
    assert deadlines == [(1, None), (2, None), (3, 2.0), (1, None)]


async def test_a_freed_call_goes_to_the_most_urgent_rows_waiting() -> None:
    """Two priorities of one model share its calls: urgent rows queued after low ones
    go out first."""
    sent: list[tuple[str, int]] = []
    gate = asyncio.Event()

    def call_for(label: str) -> Call:
        async def call(rows: npt.NDArray[np.generic], timeout_s: float | None) -> Tensors:
            sent.append((label, len(rows)))
            await gate.wait()
            return {"y": np.asarray(rows)}

        return call

    slots = CallSlots(1)
    low = RowCoalescer(call_for("low"), max_rows=2, slots=slots, urgency=4)
    urgent = RowCoalescer(call_for("urgent"), max_rows=2, slots=slots, urgency=1)
    first = asyncio.ensure_future(low.submit(np.zeros((1, 1))))

    async def first_sent() -> bool:
        return bool(sent)

    await until(first_sent, "the first call was not made")
    queued = [asyncio.ensure_future(low.submit(np.zeros((1, 1)))) for _ in range(4)]
    queued += [asyncio.ensure_future(urgent.submit(np.ones((1, 1)))) for _ in range(2)]
    await asyncio.sleep(0)  # every submit has queued its rows
    assert sent == [("low", 1)] and slots.used == 1
    gate.set()
    await asyncio.gather(first, *queued)
    assert sent == [("low", 1), ("urgent", 2), ("low", 2), ("low", 2)]
    assert slots.used == 0
