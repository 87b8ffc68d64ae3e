"""The management CLI end to end: bootstrap key from SQL, the rest over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from control_plane.cli import with_commands
from control_plane.core.settings import Settings, get_settings
from tests.control_plane.replicas import replica_env, uvicorn_replica

cli = with_commands()


@pytest.fixture(scope="module")
def server(
    settings: Settings, model_ids: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with uvicorn_replica(settings, tmp_path_factory.mktemp("cli")) as url:
        yield url


def _run(args: list[str], env: dict[str, str]) -> Any:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, args, env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


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
