"""A reload really reloads: Triton ignores a load whose config it already serves."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from control_plane.lifecycle.tuning import GENERATION_PARAMETER
from tests.control_plane.conftest import state_of


async def _served_generation(app: FastAPI, triton_name: str) -> int:
    """The generation in the config Triton serves (none before the first reload: 0)."""
    config = await state_of(app).triton.model_config(triton_name)
    parameter = config.get("parameters", {}).get(GENERATION_PARAMETER)
    return int(parameter["string_value"]) if parameter else 0


async def test_each_reload_makes_triton_load_the_model_again(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
    recommenders: dict[str, str],
) -> None:
    headers = {"X-API-Key": admin_key}
    model_id, triton_name = model_ids["b"], recommenders["b"]
    predicted = await client.post(
        f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers=headers
    )
    assert predicted.status_code == 200, predicted.text
    before = await _served_generation(app, triton_name)
    for path in (f"/api/v1/models/{model_id}/reload", f"/api/inference/models/{model_id}/reload"):
        reloaded = await client.post(path, headers=headers)
        assert reloaded.status_code == 200, reloaded.text
        after = await _served_generation(app, triton_name)
        assert after > before, (path, before, after)
        before = after
    again = await client.post(
        f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers=headers
    )
    assert again.status_code == 200 and again.json()["items"] == predicted.json()["items"]
