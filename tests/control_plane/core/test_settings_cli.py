"""Every command that needs settings refuses a bad SECRET_KEY with one line, before starting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conch_manifest.locations import PROJECT_ROOT
from control_plane.cli import with_commands
from control_plane.core.settings import get_settings

cli = with_commands()

REFUSAL = "error: invalid settings: SECRET_KEY is unset"
# For CliRunner, which adds to this process's environment: None removes a variable.
UNSET: dict[str, str | None] = dict.fromkeys(("SECRET_KEY", "CONCH_ENVIRONMENT", "CONCH_HOST"))


def _environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, **variables}


def _conch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real command, so what a terminal shows is checked, rich tracebacks included."""
    return subprocess.run(
        [sys.executable, "-m", "control_plane.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_on_a_public_address_refuses_the_development_key(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    result = _conch(["serve", "--host", "0.0.0.0", "--repository", str(repository)], _environment())
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert result.stderr.startswith(REFUSAL)
    assert "CONCH_ENVIRONMENT=development, CONCH_HOST=0.0.0.0" in result.stderr
    assert result.stdout == ""
    assert not repository.exists()  # refused before anything started


def test_keys_create_in_production_prints_one_line(tmp_path: Path) -> None:
    database = tmp_path / "conch.db"
    env = _environment(CONCH_ENVIRONMENT="production", DATABASE_URL=f"sqlite:///{database}")
    result = _conch(["keys", "create", "--scope", "admin"], env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(REFUSAL)
    assert "conch_" not in result.stdout  # no key was made
    assert not database.exists()


@pytest.mark.parametrize(
    ("args", "variables"),
    [
        (["db", "upgrade"], {"CONCH_ENVIRONMENT": "test"}),
        (["demo", "--host", "0.0.0.0"], {}),
        (["serve"], {"CONCH_HOST": "10.1.2.3"}),  # the variable is --host's default
    ],
    ids=["db-upgrade", "demo", "serve-by-variable"],
)
def test_each_command_refuses_the_same_way(
    args: list[str], variables: dict[str, str | None], tmp_path: Path
) -> None:
    env = {**UNSET, **variables, "DATABASE_URL": f"sqlite:///{tmp_path / 'conch.db'}"}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, args, env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(REFUSAL), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_development_on_loopback_needs_no_key(tmp_path: Path) -> None:
    """What `make run` relies on: no SECRET_KEY, development, 127.0.0.1."""
    env = {**UNSET, "DATABASE_URL": f"sqlite:///{tmp_path / 'conch.db'}"}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["db", "upgrade"], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
