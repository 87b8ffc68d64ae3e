"""Pick a slot for one request: weighted random, or sticky by hash(salt, user).

Weights need not sum to 100; a slot's chance is weight / sum of active weights.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from control_plane.core.errors import NoActiveSlotsError


class Weighted(Protocol):
    @property
    def weight(self) -> int: ...

    @property
    def active(self) -> bool: ...


T = TypeVar("T", bound=Weighted)


def sticky_point(salt: str, user_id: str) -> float:
    """A uniform point in [0, 1) fixed by (salt, user): the same user, the same slot."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_slot(
    slots: Sequence[T],
    *,
    user_id: str,
    sticky: bool,
    salt: str,
    rng: random.Random | None = None,
) -> T:
    candidates = [slot for slot in slots if slot.active and slot.weight > 0]
    total = sum(slot.weight for slot in candidates)
    if total == 0:
        raise NoActiveSlotsError("no active deployment slots")
    point = sticky_point(salt, user_id) if sticky else (rng or random).random()
    threshold = point * total
    cumulative = 0
    for slot in candidates:
        cumulative += slot.weight
        if threshold < cumulative:
            return slot
    return candidates[-1]  # float edge: point * total rounding up to total
