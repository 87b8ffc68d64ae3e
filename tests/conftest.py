"""Shared fixtures: the real embedded stack, started once per test session.

Triton, Redis and SQL are real here. The machine's PostgreSQL and Redis are
used as well when DATABASE_URL / REDIS_URL are set (.ci/run sets them when
those servers answer); otherwise SQLite and the embedded redis-server.
Area-specific fixtures live in tests/<area>/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.core.process import free_port
from control_plane.core.redis_embedded import EmbeddedRedis
from control_plane.triton.embedded import EmbeddedTriton


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def conch_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs and assembled backends of this session's processes, away from .conch/."""
    path = tmp_path_factory.mktemp("conch-state")
    os.environ["CONCH_STATE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def embedded_redis() -> Iterator[EmbeddedRedis]:
    """Always the embedded redis-server (tests that stop and restart Redis use this)."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis) -> str:
    """The machine's Redis when REDIS_URL is set, else the embedded one."""
    return os.environ.get("REDIS_URL") or embedded_redis.url


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The machine's PostgreSQL when DATABASE_URL is set, else a fresh SQLite file."""
    external = os.environ.get("DATABASE_URL")
    if external:
        return external
    return f"sqlite:///{tmp_path_factory.mktemp('sql') / 'conch.db'}"


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model_repository")


@pytest.fixture(scope="session")
def triton(model_repository: Path) -> Iterator[EmbeddedTriton]:
    """One embedded Triton on free ports, serving the session's model repository."""
    server = EmbeddedTriton(
        model_repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
    )
    with server:
        yield server
