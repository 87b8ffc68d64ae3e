"""A trained model reaches every replica without a restart; a slot swaps to it under load."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from pathlib import Path

import httpx
from typer.testing import CliRunner

from control_plane.cli import app as cli
from control_plane.core.settings import get_settings
from exporters.cli import register_with_control_plane
from exporters.demo_data import generate_interactions
from exporters.implicit import train_ials
from tests.control_plane.lifecycle.conftest import Cluster, swap_bound_s


def test_export_and_register_reaches_both_replicas_within_5s(cluster: Cluster) -> None:
    name = cluster.new_model()  # exported into the shared repository
    bound = swap_bound_s()
    started = time.monotonic()
    # The code path of `conch export ... --register`.
    model = register_with_control_plane(cluster.urls[0], cluster.admin_key, name)
    model_id = int(str(model["id"]))
    loaded_s = cluster.wait_loaded_everywhere(model_id, timeout_s=bound)
    for url in cluster.urls:
        response = httpx.post(
            f"{url}/inference/predict/{model_id}",
            json={"user_id": "u1"},
            headers=cluster.admin,
            timeout=5,
        )
        assert response.status_code == 200, response.text
        assert response.json()["model_id"] == model_id
    serving_s = time.monotonic() - started
    print(
        f"\nmodel_trained -> loaded on both replicas {loaded_s:.2f}s, serving {serving_s:.2f}s "
        f"(bound {bound:.0f}s, load average {os.getloadavg()[0]:.1f})"
    )
    assert serving_s < bound


async def test_slot_swap_under_steady_load_fails_no_request(cluster: Cluster) -> None:
    cluster.wait_listening()  # the swap below is measured at event speed
    old_id = cluster.slot_model_id
    new_id = cluster.register(cluster.new_model())
    cluster.wait_loaded_everywhere(new_id, timeout_s=10.0)
    results: list[tuple[float, int, int | None]] = []  # (sent at, status, model_id)
    stop = asyncio.Event()

    async with httpx.AsyncClient(timeout=10) as client:

        async def generate() -> None:
            sent = 0
            while not stop.is_set():
                url = cluster.urls[sent % len(cluster.urls)]
                sent += 1
                at = time.monotonic()
                response = await client.post(
                    f"{url}/inference/predict/project/{cluster.project_id}",
                    json={"user_id": f"u{sent % 20}"},
                    headers=cluster.admin,
                )
                body = response.json()
                results.append((at, response.status_code, body.get("model_id")))
                await asyncio.sleep(0.01)  # a steady ~50-100 requests/s on this machine

        generator = asyncio.create_task(generate())
        await asyncio.sleep(1.0)
        patch_started = time.monotonic()
        response = await client.patch(
            f"{cluster.urls[0]}/api/v1/slots/{cluster.slot_id}",
            json={"model_id": new_id},
            headers=cluster.admin,
        )
        patch_done = time.monotonic()
        assert response.status_code == 200, response.text
        cluster.slot_model_id = new_id
        await asyncio.sleep(1.5)
        stop.set()
        await generator

    failed = [r for r in results if r[1] != 200]
    before = {m for at, _, m in results if at < patch_started}
    # Other replicas drop their cached routing on the slot_changed event: allow it
    # the time to cross Redis (milliseconds; a generous bound on a loaded machine).
    switching = {m for at, _, m in results if patch_started <= at <= patch_done + 0.5}
    after = {m for at, _, m in results if at > patch_done + 0.5}
    swap_s = patch_done - patch_started
    print(f"\n{len(results)} requests, {len(failed)} failed, slot update took {swap_s:.3f}s")
    assert not failed
    assert before == {old_id}
    assert switching <= {old_id, new_id}
    assert after == {new_id}


def test_conch_export_register_is_served_by_both_replicas(cluster: Cluster, tmp_path: Path) -> None:
    """The real command: train, export with parity check, --register; no restart anywhere."""
    source = tmp_path / "ials.npz"
    interactions = generate_interactions(n_users=60, n_items=40, n_clusters=3, seed=5)
    train_ials(interactions, iterations=2).save(source)
    name = f"lc_cli_{uuid.uuid4().hex[:6]}"
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli,
            [
                "export", "recommender", str(source), "--name", name,
                "--repository", str(cluster.repository), "--register",
                "--url", cluster.urls[1], "--api-key", cluster.admin_key,
            ],
        )  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    match = re.search(r"registered as model (\d+)", result.output)
    assert match, result.output
    model_id = int(match.group(1))
    cluster.wait_loaded_everywhere(model_id, timeout_s=swap_bound_s() + 5)
    for url in cluster.urls:
        models = httpx.get(f"{url}/api/v1/models/{model_id}", headers=cluster.admin).json()
        assert models["load_state"] == "ready", models


def test_register_without_a_key_is_refused_before_exporting(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["export", "recommender", str(tmp_path / "none.npz"), "--name", "x", "--register"],
        env={"CONCH_API_KEY": ""},
    )
    assert result.exit_code == 2
    assert "--api-key" in result.output
