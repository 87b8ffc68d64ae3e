"""Connections that outlive a request, held under an API key, told when it stops.

A request is admitted once; a connection kept open (a stream's WebSocket) must
also end when its key is revoked while it is open. `hold` registers one for
the key's id; the `key_revoked` event (from any replica, through the event bus)
marks it at once, synchronously, so nothing is sent on it after the handler ran.
After the bus missed events (`recheck`, on resubscription) a revocation may
hide: every holder is told to verify its key again against SQL.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from control_plane.events.schemas import KeyRevoked


class Held:
    """One connection's view of its key: `revoked` set once it is, `recheck` once the
    key must be verified again."""

    def __init__(self) -> None:
        self.revoked = asyncio.Event()
        self.recheck = asyncio.Event()


class KeyWatch:
    def __init__(self) -> None:
        self._held: dict[int, set[Held]] = defaultdict(set)

    @contextmanager
    def hold(self, key_id: int) -> Iterator[Held]:
        held = Held()
        self._held[key_id].add(held)
        try:
            yield held
        finally:
            holders = self._held.get(key_id)
            if holders is not None:
                holders.discard(held)
                if not holders:
                    del self._held[key_id]

    async def on_key_revoked(self, event: KeyRevoked) -> None:
        for held in self._held.get(event.key_id, ()):
            held.revoked.set()

    def recheck(self) -> None:
        for holders in self._held.values():
            for held in holders:
                held.recheck.set()

    def holding(self, key_id: int) -> int:
        return len(self._held.get(key_id, ()))
