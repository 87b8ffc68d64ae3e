"""Schema and bootstrap: migrations match the models; first key without a server; demo seed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from typer.testing import CliRunner

from conch_embedded.demo.seed import seed_demo
from control_plane.cli import with_commands
from control_plane.core.settings import Settings, get_settings

cli = with_commands()


def test_keys_create_bootstraps_a_fresh_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    get_settings.cache_clear()  # the CLI reads its settings from this environment
    try:
        result = CliRunner().invoke(
            cli, ["keys", "create", "--scope", "admin", "--name", "root"], env={"DATABASE_URL": url}
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("conch_")


@dataclass
class FakeDemo:
    recommenders: Mapping[str, str]


async def test_seed_demo_is_idempotent(
    settings: Settings, recommenders: dict[str, str], client: httpx.AsyncClient
) -> None:
    demo = FakeDemo({"ials": recommenders["a"], "item_knn": recommenders["b"]})
    first = await seed_demo(settings, demo)
    second = await seed_demo(settings, demo)
    assert (first.project_id, first.model_ids, first.slot_ids) == (
        second.project_id, second.model_ids, second.slot_ids,
    )  # fmt: skip
    assert first.predict_key != second.predict_key
    response = await client.post(
        f"/inference/predict/project/{second.project_id}",
        json={"user_id": "u1"},
        headers={"X-API-Key": second.predict_key},
    )
    assert response.status_code == 200, response.text
    assert response.json()["slot_name"] in {"Control", "Variant A"}
