"""Shared fixtures: the real embedded stack, started once per test session.

Triton, Redis and SQL are real here. The machine's PostgreSQL and Redis are
used as well when DATABASE_URL / REDIS_URL are set (.ci/run sets them when
those servers answer); otherwise SQLite and the embedded redis-server.
Area-specific fixtures live in tests/<area>/conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from conch_embedded.redis_server import EmbeddedRedis
from conch_embedded.triton_server import EmbeddedTriton


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


@pytest.fixture(scope="session", autouse=True)
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this session: a new one on the PostgreSQL server that
    DATABASE_URL names (dropped afterwards: earlier runs must not leak rows into
    this one, and subprocesses inherit it), else a new SQLite file."""
    external = os.environ.get("DATABASE_URL")
    if not external or not external.startswith(("postgresql", "postgres:")):
        yield external or f"sqlite:///{tmp_path_factory.mktemp('sql') / 'conch.db'}"
        return
    server = make_url(external).set(drivername="postgresql")
    name = f"conch_test_{uuid.uuid4().hex[:12]}"
    admin = server.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    os.environ["DATABASE_URL"] = url
    try:
        yield url
    finally:
        os.environ["DATABASE_URL"] = external
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model_repository")


@pytest.fixture(scope="session")
def triton(model_repository: Path) -> Iterator[EmbeddedTriton]:
    """One embedded Triton on free ports, serving the session's model repository."""
    server = EmbeddedTriton.on_free_ports(model_repository)
    with server:
        yield server
