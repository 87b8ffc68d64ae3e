"""A dictionary holding at most `max_size` entries, dropping the least recently used.

The limiter keeps a little in-process state per API key (a key known to be over
its limit; its per-process window while Redis is unreachable). Keys are
authenticated first, but a deployment can hold many of them: the bound keeps a
flood of distinct keys from growing the process without limit. Forgetting an
entry is always safe there: it costs a Redis round trip, or a fresh
per-process budget for a key nobody has used lately.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRUDict(Generic[K, V]):
    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
