"""Waiting for a condition in tests: each wait ends as soon as it holds; the deadline
only guards against a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

DEADLINE_S = 90.0


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S
) -> None:
    deadline = time.monotonic() + deadline_s
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def until_served(client: httpx.AsyncClient, model_id: int, predict_key: str) -> None:
    """Until the model answers a prediction (503 while it is still loading)."""

    async def answered() -> bool:
        response = await client.post(
            f"/inference/predict/{model_id}",
            json={"user_id": "u1"},
            headers={"X-API-Key": predict_key},
            timeout=DEADLINE_S,
        )
        assert response.status_code in (200, 503), response.text  # 503: still loading
        return response.status_code == 200

    await until(answered, f"model {model_id} was not served")
