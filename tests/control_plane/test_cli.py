"""The management CLI end to end: bootstrap key from SQL, the rest over HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import Result
from typer.testing import CliRunner

from conch_manifest.layout import load_manifest, manifest_path
from control_plane.cli import with_commands
from control_plane.core.settings import Settings, get_settings
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.replicas import replica_env, uvicorn_replica

cli = with_commands()


@pytest.fixture(scope="module")
def server(
    settings: Settings, model_ids: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with uvicorn_replica(settings, tmp_path_factory.mktemp("cli")) as url:
        yield url


def _invoke(args: list[str], env: dict[str, str | None]) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, args, env=env)
    finally:
        get_settings.cache_clear()


def _run(args: list[str], env: dict[str, str]) -> Any:
    result = _invoke(args, dict(env))
    assert result.exit_code == 0, result.output
    return result.stdout


def _key(env: dict[str, str], *scopes: str) -> str:
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    output: str = _run(["keys", "create", *scope_args, "--name", "cli-test"], env)
    return output.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def admin_env(server: str, settings: Settings) -> dict[str, str]:
    env = replica_env(settings)
    env.update({"CONCH_URL": server, "CONCH_API_KEY": _key(env, "admin")})
    return env


def test_cli_manages_projects_slots_keys_and_ab(
    server: str, settings: Settings, recommenders: dict[str, str]
) -> None:
    env = replica_env(settings)
    output = _run(["keys", "create", "--scope", "admin", "--name", "cli"], env)
    env.update({"CONCH_URL": server, "CONCH_API_KEY": output.strip().splitlines()[-1]})

    def api(*args: str) -> Any:
        return json.loads(_run(list(args), env))

    model = api("models", "register", recommenders["a"])
    assert model["triton_name"] == recommenders["a"]
    assert any(m["id"] == model["id"] for m in api("models", "list"))
    project = api("projects", "create", f"cli-{model['id']}-{id(env)}", "--sticky")
    assert project["sticky"] is True
    assert any(p["id"] == project["id"] for p in api("projects", "list"))
    pid = str(project["id"])
    control = api(
        "slots", "create", pid, "Control", "--model-id", str(model["id"]), "--weight", "60"
    )
    variant = api(
        "slots", "create", pid, "Variant A", "--model-id", str(model["id"]), "--weight", "40"
    )
    assert api("slots", "update", str(variant["id"]), "--weight", "10")["weight"] == 10
    assert api("slots", "deactivate", str(variant["id"]))["active"] is False
    assert len(api("slots", "list", pid)) == 2
    results = api("ab", "results", pid)
    assert results["control_slot_id"] == control["id"]
    promoted = api("ab", "promote", pid, "--slot-id", str(control["id"]))
    assert {s["id"]: s["active"] for s in promoted} == {control["id"]: True, variant["id"]: False}
    keys = api("keys", "list")
    mine = next(k for k in keys if k["name"] == "cli")
    assert api("keys", "revoke", str(mine["id"]))["revoked_at"] is not None


def test_cli_reports_http_errors_in_one_line(server: str) -> None:
    result = CliRunner().invoke(
        cli, ["projects", "list", "--url", server, "--api-key", "conch_nope"]
    )
    assert result.exit_code == 1
    assert "401" in result.output


def _export(repository: Path, name: str, digits: str, created_at: datetime, seed: int) -> str:
    """An export as the exporters publish it: <name>-<10 hex digits>, with its manifest."""
    triton_name = f"{name}-{digits}"
    write_recommender(repository, triton_name, seed)
    manifest = load_manifest(repository, triton_name)
    manifest = manifest.model_copy(update={"name": name, "created_at": created_at})
    manifest_path(repository, triton_name).write_text(manifest.model_dump_json())
    return triton_name


def test_register_by_name_picks_the_newest_export(
    admin_env: dict[str, str], settings: Settings
) -> None:
    name = f"cli-newest-{uuid.uuid4().hex[:8]}"
    repository = settings.model_repository
    older = _export(repository, name, "ffffffffff", datetime(2026, 1, 1, tzinfo=UTC), 11)
    newer = _export(repository, name, "0000000000", datetime(2026, 2, 1, tzinfo=UTC), 12)
    # Newest of all, but its manifest says it is another model's: not an export of `name`.
    other = _export(repository, name, "aaaaaaaaaa", datetime(2026, 3, 1, tzinfo=UTC), 13)
    manifest = load_manifest(repository, other).model_copy(update={"name": f"{name}-other"})
    manifest_path(repository, other).write_text(manifest.model_dump_json())

    model = json.loads(_run(["models", "register", "--name", name], admin_env))

    assert model["triton_name"] == newer != older
    assert model["name"] == name


def test_register_by_an_unknown_name_fails_clearly(admin_env: dict[str, str]) -> None:
    result = _invoke(["models", "register", "--name", "no-such-export"], dict(admin_env))

    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "no export named 'no-such-export'" in result.stderr
    assert "Traceback" not in result.output
    assert "cptest_rec" not in result.output  # no other model is listed


def test_register_takes_exactly_one_of_triton_name_or_name(admin_env: dict[str, str]) -> None:
    for args in ([], ["some-model-0123456789", "--name", "some-model"]):
        result = _invoke(["models", "register", *args], dict(admin_env))
        assert result.exit_code == 2, result.output
        assert "exactly one" in result.stderr


def test_the_default_url_is_used_without_url(admin_env: dict[str, str], server: str) -> None:
    port = urlsplit(server).port
    assert port is not None
    env: dict[str, str | None] = {**admin_env, "CONCH_URL": None, "INFERENCE_PORT": str(port)}

    result = _invoke(["projects", "list"], env)

    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), list)


def test_a_refused_scope_is_named_with_the_demo_hint(admin_env: dict[str, str]) -> None:
    env: dict[str, str | None] = {**admin_env, "CONCH_API_KEY": _key(admin_env, "read")}

    result = _invoke(["projects", "create", f"cli-403-{uuid.uuid4().hex[:8]}"], env)

    assert result.exit_code == 1
    assert result.stderr.startswith("403:")
    assert "needs an API key with the 'write' scope" in result.stderr
    assert "CONCH_ADMIN_KEY" in result.stderr
    assert "demo.env" in result.stderr


def test_each_command_names_its_scope_in_help() -> None:
    for command in (["keys", "list"], ["projects", "create"], ["models", "register"]):
        result = CliRunner().invoke(cli, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert " scope" in result.stdout, command
        assert "CONCH_URL" in result.stdout, command
