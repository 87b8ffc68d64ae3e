"""The counting rule, in Redis (one Lua call) and in-process: a bucketed sliding window.

"100/minute" means what it always meant here: a request is refused when the
last 60 s already hold 100 admitted ones. Instead of one entry per admitted
request (a sliding log: a key allowed 100000/minute held 100000 sorted-set
members), the window is cut into `WINDOW_BUCKETS` buckets, each a count and the
time of its latest request, so a key costs at most WINDOW_BUCKETS + 1 small
entries whatever its limit.

A bucket stays counted until its *latest* request has left the window. So:
- never more than `limit` admitted in any window of `period` (as the log);
- `remaining` is exact: the limit less what the window holds;
- `reset` (and `Retry-After`) is the time until the oldest bucket leaves,
  never more than `period`; a slot may come back at most period/WINDOW_BUCKETS later
  than a log would give it back (1 s for a per-minute limit), never earlier.

Why not the alternatives: GCRA (a token bucket) refills continuously, so after
a burst of 100 it admits one more every 0.6 s: up to 199 in a minute, no longer
"100 per minute" as documented. The two-window weighted counter estimates the
previous window's share and can admit more than the limit, or fewer.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass

from control_plane.ratelimit.lru import LRUDict

WINDOW_BUCKETS = 60

# KEYS[1]: the key's window, a list of buckets, oldest first, each
# "index count cumulative last_µs" (cumulative: admitted through this bucket since
# the list began, so the window's count needs only its two ends: O(1) per call).
# ARGV: limit, period in µs, buckets per period, how many requests want in.
# Returns {admitted, counted before them, µs until the oldest bucket leaves}.
# Numbers are written with %.0f: Lua's tostring would round µs timestamps.
SLIDING_WINDOW_LUA = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local wanted = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local current = math.floor(now / (period / tonumber(ARGV[3])))
local function bucket(at)
  local entry = redis.call('LINDEX', KEYS[1], at)
  if not entry then return nil end
  local index, count, cumulative, last = string.match(entry, '^(%d+) (%d+) (%d+) (%d+)$')
  return {index = tonumber(index), count = tonumber(count),
          cumulative = tonumber(cumulative), last = tonumber(last)}
end
local function encode(b)
  return string.format('%.0f %.0f %.0f %.0f', b.index, b.count, b.cumulative, b.last)
end
local oldest = bucket(0)
while oldest and oldest.last <= now - period do
  redis.call('LPOP', KEYS[1])
  oldest = bucket(0)
end
local newest = oldest and bucket(-1)
local counted = 0
if oldest then counted = newest.cumulative - oldest.cumulative + oldest.count end
local admitted = math.max(0, math.min(wanted, limit - counted))
if admitted > 0 then
  if newest and newest.index == current then
    newest.count = newest.count + admitted
    newest.cumulative = newest.cumulative + admitted
    newest.last = now
    redis.call('LSET', KEYS[1], -1, encode(newest))
    if oldest.index == current then oldest = newest end
  else
    local cumulative = (newest and newest.cumulative or 0) + admitted
    local b = {index = current, count = admitted, cumulative = cumulative, last = now}
    redis.call('RPUSH', KEYS[1], encode(b))
    oldest = oldest or b
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
end
local reset = period
if oldest then reset = oldest.last + period - now end
return {admitted, counted, math.ceil(reset)}
"""
SLIDING_WINDOW_SHA = hashlib.sha1(SLIDING_WINDOW_LUA.encode()).hexdigest()


@dataclass(frozen=True)
class WindowCount:
    admitted: int  # of the requests that wanted in, in arrival order
    counted: int  # admitted requests the window held before them
    reset_s: float  # until the oldest bucket leaves the window


@dataclass
class _Bucket:
    index: int
    count: int
    last: float


class LocalWindows:
    """The same rule in this process, for while Redis is unreachable."""

    def __init__(self, max_keys: int) -> None:
        self._windows: LRUDict[tuple[int, float], deque[_Bucket]] = LRUDict(max_keys)

    def count(self, key_id: int, limit: int, period: float, wanted: int) -> WindowCount:
        now = time.monotonic()
        window = self._windows.get((key_id, period))
        if window is None:
            window = deque()
            self._windows[(key_id, period)] = window
        while window and window[0].last <= now - period:
            window.popleft()
        counted = sum(bucket.count for bucket in window)
        admitted = max(0, min(wanted, limit - counted))
        if admitted:
            current = math.floor(now / (period / WINDOW_BUCKETS))
            if window and window[-1].index == current:
                window[-1].count += admitted
                window[-1].last = now
            else:
                window.append(_Bucket(current, admitted, now))
        reset = window[0].last + period - now if window else period
        return WindowCount(admitted, counted, reset)

    def __len__(self) -> int:
        return len(self._windows)
