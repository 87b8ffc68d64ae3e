"""An ASGI request body served in chunks, counting how much the app read."""

from __future__ import annotations

from collections.abc import Sequence

CHUNK = b"x" * 65536


class Body:
    """An ASGI `receive` that serves `chunks` and counts what the app took."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.taken = 0

    async def __call__(self) -> dict[str, object]:
        if self.taken >= len(self.chunks):
            return {"type": "http.disconnect"}
        self.taken += 1
        return {
            "type": "http.request",
            "body": self.chunks[self.taken - 1],
            "more_body": self.taken < len(self.chunks),
        }
