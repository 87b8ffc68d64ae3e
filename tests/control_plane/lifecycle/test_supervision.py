"""`conch serve` as a real process: its Triton and Redis killed under it, and SIGTERM.

The replica reconciles only every 600 s here, so a pinned model that is served
again soon after Triton's restart proves the restart was noticed, not waited out.
Every wait is for a condition; the deadlines are failure guards only.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from conch_embedded.process import ManagedProcess, free_port, processes_in_group, tail
from conch_embedded.redis_server import answers_ping
from conch_embedded.stack import REDIS_DATA_DIR
from conch_manifest.locations import PROJECT_ROOT
from control_plane.cli.keys_db import create_key_in_database
from control_plane.core.settings import Settings
from tests.control_plane.recommender_model import write_recommender

T = TypeVar("T")
GUARD_S = 180.0  # generous: Triton restarts and model loads on two shared cores
MODEL = "sv_base"


@dataclass
class Served:
    process: ManagedProcess
    url: str
    state_dir: Path
    triton_grpc_port: int
    predict_key: str = ""
    project_id: int = 0

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def child(self, name: str) -> int:
        pids = [pid for pid in _children(self.pid) if _comm(pid) == name]
        assert len(pids) == 1, f"{name} children of conch serve: {pids}"
        return pids[0]

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.url}/inference/ready", timeout=10)

    def predict(self) -> httpx.Response:
        return httpx.post(
            f"{self.url}/inference/predict/project/{self.project_id}",
            json={"user_id": "u1"},
            headers={"X-API-Key": self.predict_key},
            timeout=60,
        )


# --- processes, read from /proc ------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """[state, ppid, pgrp, ...] (the fields after the command name), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie runs nothing


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _children(pid: int) -> list[int]:
    return [p for p in _all_pids() if (s := _stat(p)) is not None and int(s[1]) == pid]


def _descendants(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        children = [c for p in frontier for c in _children(p) if _alive(c)]
        found.update(children)
        frontier = children
    return found


def _stub_shm_regions(pids: list[int]) -> list[Path]:
    argvs = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in pids]
    return [Path("/dev/shm") / argv[2].decode() for argv in argvs]


def _await(
    probe: Callable[[], T | None], what: str | Callable[[], str], timeout_s: float = GUARD_S
) -> T:
    """Poll until `probe` returns something other than None/False; return it."""
    limit = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > limit:
            raise AssertionError(
                f"timed out waiting until {what if isinstance(what, str) else what()}"
            )
        time.sleep(0.05)


# --- one `conch serve` ---------------------------------------------------------------


@contextmanager
def conch_serve(workdir: Path) -> Iterator[Served]:
    """`python -m control_plane.cli serve` over a fresh SQLite, repository and state dir."""
    repository = workdir / "repository"
    write_recommender(repository, MODEL, seed=11)
    state = workdir / "state"
    secret = secrets.token_urlsafe(48)
    database_url = f"sqlite:///{workdir / 'conch.db'}"
    port, http, grpc, metrics = (free_port() for _ in range(4))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "MODEL_EVENTS_REDIS_URL") and not k.startswith("CONCH_")
    }
    env.update(
        {
            "CONCH_STATE_DIR": str(state),
            "DATABASE_URL": database_url,
            "SECRET_KEY": secret,
            "CONCH_ENVIRONMENT": "test",
            "CONCH_RECONCILE_INTERVAL_S": "600",
            "CONCH_RATE_LIMIT_ENABLED": "false",
            "CONCH_MODEL_LOAD_WAIT_S": "30",
        }
    )
    process = ManagedProcess(
        "conch-serve",
        [
            sys.executable, "-m", "control_plane.cli", "serve", "--repository", str(repository),
            "--port", str(port), "--http-port", str(http), "--grpc-port", str(grpc),
            "--metrics-port", str(metrics),
        ],
        log_path=workdir / "serve.log",
        env=env,
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    process.spawn()
    served = Served(process, f"http://127.0.0.1:{port}", state, grpc)
    try:
        _await(lambda: _answers_ready(served), "conch serve answered /inference/ready")
        settings = Settings(environment="test", database_url=database_url, secret_key=secret)
        served.predict_key = asyncio.run(create_key_in_database(settings, scopes=["predict"]))
        admin = asyncio.run(create_key_in_database(settings, scopes=["admin"]))
        _pin_the_model(served, {"X-API-Key": admin})
        yield served
    finally:
        process.stop(timeout_s=30)


def _answers_ready(served: Served) -> bool:
    code = served.process.exit_code()
    assert code is None, f"conch serve exited ({code}): {tail(served.process.log_path)}"
    try:
        return served.ready().status_code == 200
    except httpx.TransportError:
        return False


def _pin_the_model(served: Served, admin: dict[str, str]) -> None:
    """Register the model and put it in an active slot: the replica must keep it loaded."""
    url = served.url
    model = httpx.post(f"{url}/api/v1/models", json={"triton_name": MODEL}, headers=admin)
    assert model.status_code == 201, model.text
    project = httpx.post(f"{url}/api/v1/projects", json={"name": "sv"}, headers=admin)
    assert project.status_code == 201, project.text
    served.project_id = project.json()["id"]
    slot = httpx.post(
        f"{url}/api/v1/projects/{served.project_id}/slots",
        json={"name": "main", "model_id": model.json()["id"], "weight": 100},
        headers=admin,
        timeout=120,
    )
    assert slot.status_code == 201, slot.text
    _await(lambda: _ready_with_pinned(served), "the pinned model made the replica ready")


def _ready_with_pinned(served: Served) -> bool:
    response = served.ready()
    return response.status_code == 200 and response.json()["pinned"] == 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with conch_serve(tmp_path_factory.mktemp("supervision")) as running:
        yield running


# --- the tests -----------------------------------------------------------------------


def test_killed_triton_comes_back_and_serves_the_pinned_model(served: Served) -> None:
    _await(lambda: _ready_with_pinned(served), "ready before the kill")
    assert served.predict().status_code == 200
    triton = served.child("tritonserver")
    stubs = [pid for pid in processes_in_group(triton) if pid != triton]
    assert stubs, "the loaded model runs in a Python backend stub"
    regions = _stub_shm_regions(stubs)
    assert all(region.exists() for region in regions)

    os.kill(triton, signal.SIGKILL)

    # Both at once, each seen whenever it happens: readiness says 503 while Triton is
    # down (a short window), and the dead Triton's stubs go (nobody else would end them).
    seen: dict[str, httpx.Response | bool] = {}

    def outage_seen() -> bool:
        if "unready" not in seen and (down := _unready(served)) is not None:
            seen["unready"] = down
        if not any(_alive(pid) for pid in stubs):
            seen["stubs gone"] = True
        return len(seen) == 2

    _await(outage_seen, lambda: f"readiness was 503 and the stubs were gone (saw {seen})")
    down = seen["unready"]
    assert isinstance(down, httpx.Response) and down.json()["ready"] is False
    assert int(down.headers["Retry-After"]) >= 1
    _await(lambda: not any(r.exists() for r in regions), "the stubs' shared memory was freed")

    _await(lambda: _ready_with_pinned(served), "ready again (restarted, model reloaded)")
    restarted = served.child("tritonserver")
    assert restarted != triton
    cmdline = Path(f"/proc/{restarted}/cmdline").read_bytes().split(b"\0")
    assert f"--grpc-port={served.triton_grpc_port}".encode() in cmdline  # same ports
    response = served.predict()
    assert response.status_code == 200, response.text
    assert response.json()["slot_name"] == "main"


def _unready(served: Served) -> httpx.Response | None:
    response = served.ready()
    return response if response.status_code == 503 else None


def test_killed_redis_is_restarted_on_its_port(served: Served) -> None:
    redis_pid = served.child("redis-server")
    # redis-server retitles itself: "/path/to/redis-server 127.0.0.1:<port>".
    port = int(Path(f"/proc/{redis_pid}/cmdline").read_bytes().strip(b"\0 ").rsplit(b":")[-1])

    os.kill(redis_pid, signal.SIGKILL)

    restarted = _await(
        lambda: next((p for p in _children(served.pid) if _is_new_redis(p, redis_pid)), None),
        "a new redis-server was started",
    )
    _await(lambda: answers_ping("127.0.0.1", port, 2), f"Redis answered on port {port} again")
    assert _alive(restarted)
    _await(lambda: _listener_ok(served), "the control plane resubscribed to the new Redis")


def _is_new_redis(pid: int, old: int) -> bool:
    return pid != old and _alive(pid) and _comm(pid) == "redis-server"


def _listener_ok(served: Served) -> bool:
    components = httpx.get(f"{served.url}/inference/health", timeout=10).json()["components"]
    return bool(components["redis"] == "ok" and components["listener"] == "ok")


def test_sigterm_stops_everything_it_started(tmp_path: Path) -> None:
    with conch_serve(tmp_path) as running:
        children = _descendants(running.pid)
        assert {_comm(pid) for pid in children} >= {"tritonserver", "redis-server"}
        assert any(_comm(pid).startswith("triton_python") for pid in children)
        assert list(running.state_dir.glob("triton-*")) and list(running.state_dir.glob("redis-*"))

        os.kill(running.pid, signal.SIGTERM)

        code = _await(running.process.exit_code, "conch serve exited after SIGTERM", 90.0)
        assert code == 0, tail(running.process.log_path)
        left = sorted(pid for pid in children if _alive(pid))
        assert not left, f"left running: {[(pid, _comm(pid)) for pid in left]}"
        assert not list(running.state_dir.glob("triton-*"))
        # Scratch directories go; the Redis data (the async queue) stays, flushed.
        assert [p.name for p in running.state_dir.glob("redis-*")] == [REDIS_DATA_DIR]
        data = running.state_dir / REDIS_DATA_DIR
        assert any(p.name.startswith("appendonly") for p in data.iterdir())
