"""Control-plane replicas as real uvicorn processes, for behaviour that spans processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from conch_embedded.process import ManagedProcess, free_port, tail
from conch_manifest.locations import PROJECT_ROOT
from control_plane.core.settings import Settings


def replica_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url or "",
            "MODEL_EVENTS_REDIS_URL": settings.events_redis_url or "",
            "SECRET_KEY": settings.secret_key.get_secret_value(),
            "CONCH_TRITON_GRPC_URL": settings.triton_grpc_url,
            "CONCH_TRITON_HTTP_URL": settings.triton_http_url or "",
            "CONCH_MODEL_REPOSITORY": str(settings.model_repository),
            "CONCH_ENVIRONMENT": "test",
        }
    )
    return env


@contextmanager
def uvicorn_replica(
    settings: Settings, log_dir: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[str]:
    port = free_port()
    process = ManagedProcess(
        f"conch-{port}",
        [
            sys.executable, "-m", "uvicorn", "control_plane.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ],
        log_path=log_dir / f"replica-{port}.log",
        env={**replica_env(settings), **(extra_env or {})},
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    process.spawn()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.exit_code() is not None:
                raise RuntimeError(f"replica exited: {tail(process.log_path)}")
            try:
                if httpx.get(f"{url}/inference/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica not up in 60 s: {tail(process.log_path)}")
            time.sleep(0.2)
        yield url
    finally:
        process.stop(timeout_s=10)
