"""Background loads one at a time; a load that a request waits for jumps the queue.

Each load costs Triton a backend process and seconds of CPU: ten models announced
at once must not starve the requests being served, nor the one load a client is
waiting for.
"""

from __future__ import annotations

import asyncio


class LoadQueue:
    def __init__(self, concurrency: int = 1) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._urgent: dict[str, asyncio.Event] = {}

    def _event(self, name: str) -> asyncio.Event:
        return self._urgent.setdefault(name, asyncio.Event())

    def reset(self, name: str) -> None:
        self._event(name).clear()

    def hurry(self, name: str) -> None:
        self._event(name).set()

    async def turn(self, name: str) -> bool:
        """Wait for a slot or for `hurry(name)`; True when a slot was taken (release it)."""
        urgent = self._event(name)
        if urgent.is_set():
            return False
        acquire = asyncio.ensure_future(self._slots.acquire())
        woken = asyncio.ensure_future(urgent.wait())
        try:
            await asyncio.wait({acquire, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not acquire.done():
                acquire.cancel()
        return acquire.done() and not acquire.cancelled()

    def release(self) -> None:
        self._slots.release()
