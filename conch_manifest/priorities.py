"""Request priorities (seed 002's `priority`) and the Triton priority levels they map to.

Exported models declare `dynamic_batching { priority_levels: 4 default_priority_level: 3 }`
so Triton's scheduler serves a higher level (a smaller number) first; the control
plane sends each request's level with it. Shared here because both the exporters
(which write the config) and the control plane (which sends the levels) need them.
"""

from __future__ import annotations

from typing import Literal

Priority = Literal["low", "normal", "high", "urgent"]

# Triton: level 1 is served first; 0 means "the model's default level".
PRIORITY_LEVELS: dict[str, int] = {"urgent": 1, "high": 2, "normal": 3, "low": 4}
PRIORITY_LEVEL_COUNT = 4
DEFAULT_PRIORITY: Priority = "normal"
DEFAULT_PRIORITY_LEVEL = PRIORITY_LEVELS[DEFAULT_PRIORITY]
