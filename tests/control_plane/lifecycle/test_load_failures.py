"""A model that cannot load never takes traffic; Triton's reason is visible in the API."""

from __future__ import annotations

import json
import time

import httpx
from typer.testing import CliRunner

from control_plane.cli import with_commands
from control_plane.core.settings import get_settings
from tests.control_plane.lifecycle.conftest import Cluster

cli = with_commands()


def test_corrupt_model_fails_to_load_and_the_slot_keeps_serving(cluster: Cluster) -> None:
    serving_id = cluster.slot_model_id
    model_id = cluster.register(cluster.new_model(corrupt=True))
    deadline = time.monotonic() + 15
    infos: list[dict[str, object]] = []
    while True:  # both replicas try on model_trained and fail
        infos = [
            httpx.get(f"{url}/api/v1/models/{model_id}", headers=cluster.admin, timeout=5).json()
            for url in cluster.urls
        ]
        if all(info["load_state"] == "failed" for info in infos):
            break
        assert time.monotonic() < deadline, infos
        time.sleep(0.1)
    for info in infos:
        assert info["load_error"], info  # recorded on the model row (SQL)
        assert info["replica_load_error"], info  # and in this replica's memory
        assert "could not be loaded" in str(info["load_error"])

    response = httpx.patch(
        f"{cluster.urls[1]}/api/v1/slots/{cluster.slot_id}",
        json={"model_id": model_id},
        headers=cluster.admin,
        timeout=60,
    )
    assert response.status_code == 409, response.text
    assert response.json()["details"]["load_error"]
    for url in cluster.urls:
        response = httpx.post(
            f"{url}/inference/predict/project/{cluster.project_id}",
            json={"user_id": "u3"},
            headers=cluster.admin,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["model_id"] == serving_id
    # The CLI shows the same reason.
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli,
            ["models", "info", str(model_id)],
            env={"CONCH_URL": cluster.urls[0], "CONCH_API_KEY": cluster.admin_key},
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["load_state"] == "failed"  # log lines go to stderr
    assert "INVALID_PROTOBUF" in result.output or "could not be loaded" in result.output
    # A direct predict on the broken model answers 500 with the reason (seed 000's
    # "model failed to load"), not a hang and not a 503 "still loading".
    response = httpx.post(
        f"{cluster.urls[0]}/inference/predict/{model_id}",
        json={"user_id": "u3"},
        headers=cluster.admin,
        timeout=10,
    )
    assert response.status_code == 500, response.text
    assert "could not be loaded" in response.json()["message"]
