"""Redis clients whose reads wait by design: subscriptions and blocking stream reads."""

from __future__ import annotations

from redis.asyncio import Redis


def listening_redis(url: str, *, connect_timeout_s: float, health_check_interval_s: int) -> Redis:
    """A client without a read timeout (an idle channel or an empty stream is no
    failure); keepalive and health checks notice a dead connection instead."""
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        health_check_interval=health_check_interval_s,
    )
