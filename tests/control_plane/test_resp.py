"""The rate limiter's pipelined Redis connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from conch_embedded.redis_server import EmbeddedRedis
from control_plane.ratelimit.endpoint import RedisEndpoint
from control_plane.ratelimit.resp import PipelinedRedis, encode_command


def test_commands_are_encoded_as_resp_arrays() -> None:
    assert encode_command("SET", "k", 12) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"


async def test_urls_are_read_as_redis_py_reads_them() -> None:
    unix = RedisEndpoint.from_url("unix:///run/redis.sock?db=2&password=p%40ss&client_name=conch")
    assert (unix.path, unix.host, unix.tls, unix.db) == ("/run/redis.sock", None, None, 2)
    assert await unix.setup_commands() == [
        encode_command("AUTH", "p@ss"),
        encode_command("CLIENT", "SETNAME", "conch"),
        encode_command("SELECT", 2),
    ]
    tls = RedisEndpoint.from_url("rediss://alice:secret@cache.internal:6380/0")
    assert (tls.host, tls.port, tls.path) == ("cache.internal", 6380, None)
    assert tls.tls is not None and tls.tls.verify_mode == ssl.CERT_REQUIRED  # redis-py's default
    assert tls.tls.check_hostname
    assert await tls.setup_commands() == [encode_command("AUTH", "alice", "secret")]
    unverified = RedisEndpoint.from_url("rediss://cache.internal/0?ssl_cert_reqs=none")
    assert unverified.tls is not None and unverified.tls.verify_mode == ssl.CERT_NONE
    assert "secret" not in tls.describe()


async def test_concurrent_calls_get_their_own_replies_in_the_selected_db(
    embedded_redis: EmbeddedRedis,
) -> None:
    connection = PipelinedRedis(embedded_redis.url.rsplit("/", 1)[0] + "/3")
    try:
        replies = await asyncio.gather(
            *(connection.call("INCRBY", f"resp-test:{i}", i) for i in range(200))
        )
        assert replies == list(range(200))
        with pytest.raises(ResponseError, match="NOSCRIPT"):
            await connection.call("EVALSHA", "0" * 40, 0)
    finally:
        await connection.aclose()
    check = redis.Redis(port=embedded_redis.port, db=3)
    assert check.get("resp-test:7") == b"7"
    check.close()


async def test_a_lost_server_fails_callers_and_the_next_call_reconnects() -> None:
    server = EmbeddedRedis().start()
    port = server.port
    connection = PipelinedRedis(server.url)
    try:
        assert await connection.call("PING") == b"PONG"
        server.stop()
        with pytest.raises(RedisConnectionError):
            for _ in range(3):  # the first call may still find the socket open
                await connection.call("PING")
        server = EmbeddedRedis(port=port).start()
        assert await connection.call("PING") == b"PONG"
    finally:
        await connection.aclose()
        server.stop()
