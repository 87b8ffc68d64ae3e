"""The embedded stack at start: scratch directories of dead runs go, live ones stay;
a persistent Redis keeps its data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conch_embedded.stack import REDIS_DATA_DIR, EmbeddedStack, StackConfig


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _run_dir(state: Path, kind: str, pid: int, owner: str | None) -> Path:
    """A directory laid out as the stack's own (`<kind>-<pid>-<random>` + owner file)."""
    path = state / f"{kind}-{pid}-abc123"
    (path / "backends").mkdir(parents=True)
    if owner is not None:
        (path / "owner").write_text(owner)
    return path


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONCH_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def other_run() -> Iterator[int]:
    """A live process standing for a concurrent `conch serve`."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield process.pid
    process.kill()
    process.wait()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: the pid names no process now
    return process.pid


def test_start_removes_only_the_directories_of_dead_runs(state: Path, other_run: int) -> None:
    dead = _dead_pid()
    killed_triton = _run_dir(state, "triton", dead, f"{dead} 12345")
    killed_redis = _run_dir(state, "redis", dead, None)
    concurrent = _run_dir(state, "triton", other_run, f"{other_run} {_start_time(other_run)}")
    # The pid lives, but not as the process that wrote the file: reused since.
    reused = _run_dir(state, "redis", other_run, f"{other_run} 1")
    unrelated = state / "triton-models"  # not a scratch directory's name
    unrelated.mkdir()
    logs = state / "logs"
    logs.mkdir()

    # Only Redis is embedded here (Triton "external"): the cheapest whole start.
    stack = EmbeddedStack(
        StackConfig(model_repository=state, triton_url="127.0.0.1:1", triton_http_url="")
    )
    with stack:
        assert stack.redis is not None and stack.redis._workdir is not None
        own = stack.redis._workdir
        assert own.is_dir() and own.name.startswith(f"redis-{os.getpid()}-")
        assert not killed_triton.exists()
        assert not killed_redis.exists()
        assert not reused.exists()
        assert concurrent.is_dir()
        assert unrelated.is_dir() and logs.is_dir()
    assert not own.exists()  # its own directory goes at stop


def test_a_persistent_redis_keeps_its_data_across_stack_restarts(state: Path) -> None:
    # What `conch serve` gives the stack; the sweep of dead runs' directories spares it.
    config = StackConfig(
        model_repository=state,
        triton_url="127.0.0.1:1",
        triton_http_url="",
        redis_data_dir=state / REDIS_DATA_DIR,
    )
    with EmbeddedStack(config) as stack:
        assert stack.redis is not None and stack.redis._workdir is None  # no scratch dir
        client = redis.Redis.from_url(stack.redis_url)
        entry_id = client.xadd("tasks", {"task_id": "task_1"})
        client.close()
    with EmbeddedStack(config) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        assert client.xrange("tasks") == [(entry_id, {b"task_id": b"task_1"})]
        client.close()
