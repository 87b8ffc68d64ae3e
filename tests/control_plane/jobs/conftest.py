"""A registered model that async tasks can name, shared by the session's job tests."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.control_plane.engine_api.tabular_model import export_regressor, predict_rows


@pytest.fixture(scope="session")
async def regressor_id(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> int:
    """A Ridge regressor over `tabular_model.ROW`'s ten features, loaded."""
    triton_name = export_regressor(model_repository, tmp_path_factory.mktemp("regressor"))
    response = await client.post(
        "/api/v1/models", json={"triton_name": triton_name}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    registered: int = response.json()["id"]
    assert (await predict_rows(client, registered, admin_key)).status_code == 200  # loaded
    return registered
