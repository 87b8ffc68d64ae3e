"""A trained model reaches every replica without a restart; a slot swaps to it under load.

These replicas reconcile once an hour: nothing but the `model_trained` and
`slot_changed` events (over Redis) can explain what they do within a test. Waits end
when their condition holds; DEADLINE_S only guards against a hang.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conch_embedded.demo.data import generate_interactions
from control_plane.cli import with_commands
from control_plane.core.settings import get_settings
from exporters.cli import register_with_control_plane
from exporters.implicit import train_ials
from tests.control_plane.lifecycle.conftest import (
    DEADLINE_S,
    REPLICA_ENV,
    Cluster,
    start_cluster,
)

cli = with_commands()

# Neither a periodic pass nor a cache expiry: only the Redis events can explain a swap.
EVENTS_ONLY_ENV = {**REPLICA_ENV, "CONCH_RECONCILE_INTERVAL_S": "3600", "CONCH_CACHE_TTL_S": "3600"}


@pytest.fixture(scope="module")
def events_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory, EVENTS_ONLY_ENV) as started:
        started.wait_listening()
        yield started


# `/api/v1/engine`'s counters (core/metrics.py `snapshot`).
TRAINED_HEARD = 'lifecycle.events{type="model_trained"}'
SLOT_CHANGE_HEARD = 'events.received{type="slot_changed"}'


def _engine(cluster: Cluster, replica: int) -> dict[str, object]:
    response = httpx.get(f"{cluster.urls[replica]}/api/v1/engine", headers=cluster.admin)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _counter(cluster: Cluster, replica: int, name: str) -> int:
    counters = _engine(cluster, replica)["counters"]
    assert isinstance(counters, dict)
    return int(counters.get(name, 0))


def test_export_and_register_reaches_both_replicas_by_the_event(events_cluster: Cluster) -> None:
    cluster = events_cluster
    name = cluster.new_model()  # exported into the shared repository
    heard_before = [_counter(cluster, r, TRAINED_HEARD) for r in (0, 1)]
    started = time.monotonic()
    # The code path of `conch export ... --register`.
    model = register_with_control_plane(cluster.urls[0], cluster.admin_key, name)
    model_id = int(str(model["id"]))
    loaded_s = cluster.wait_loaded_everywhere(model_id)
    for url in cluster.urls:
        response = httpx.post(
            f"{url}/inference/predict/{model_id}",
            json={"user_id": "u1"},
            headers=cluster.admin,
            timeout=DEADLINE_S,
        )
        assert response.status_code == 200, response.text
        assert response.json()["model_id"] == model_id
    print(
        f"\nmodel_trained -> loaded on both replicas {loaded_s:.2f}s, "
        f"serving {time.monotonic() - started:.2f}s"
    )
    # Each replica handled the one model_trained (the publisher locally, the other over
    # Redis); with reconciliation an hour apart, nothing else loads a new model here.
    heard = [_counter(cluster, r, TRAINED_HEARD) for r in (0, 1)]
    assert [after - before for after, before in zip(heard, heard_before, strict=True)] == [1, 1]


async def test_slot_swap_under_steady_load_fails_no_request(events_cluster: Cluster) -> None:
    cluster = events_cluster
    old_id = cluster.slot_model_id
    new_id = cluster.register(cluster.new_model())
    cluster.wait_loaded_everywhere(new_id)
    heard_before = [_counter(cluster, r, SLOT_CHANGE_HEARD) for r in (0, 1)]
    # (replica, sent at, answered at, status, model_id) in the order sent, which is the
    # order answered: the generator sends one request at a time.
    results: list[tuple[int, float, float, int, int | None]] = []
    stop = asyncio.Event()

    def answered_new_after(at: float) -> set[int]:
        return {r for r, sent, _, _, m in results if sent > at and m == new_id}

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:

        async def generate() -> None:
            sent = 0
            while not stop.is_set():
                replica = sent % len(cluster.urls)
                sent += 1
                at = time.monotonic()
                response = await client.post(
                    f"{cluster.urls[replica]}/inference/predict/project/{cluster.project_id}",
                    json={"user_id": f"u{sent % 20}"},
                    headers=cluster.admin,
                )
                model_id = response.json().get("model_id")
                results.append((replica, at, time.monotonic(), response.status_code, model_id))
                await asyncio.sleep(0.01)  # steady load, not a flood

        generator = asyncio.create_task(generate())
        try:
            await until(lambda: len(results) >= 20, "no steady load before the swap")
            patch_started = time.monotonic()
            response = await client.patch(
                f"{cluster.urls[0]}/api/v1/slots/{cluster.slot_id}",
                json={"model_id": new_id},
                headers=cluster.admin,
            )
            patch_done = time.monotonic()
            assert response.status_code == 200, response.text
            cluster.slot_model_id = new_id
            # Until every replica has served the new model to requests sent after the
            # swap returned, and then a few more requests each.
            await until(
                lambda: answered_new_after(patch_done) == set(range(len(cluster.urls))),
                "a replica never served the new model",
            )
            settled = len(results) + 10
            await until(lambda: len(results) >= settled, "the load stopped")
        finally:
            stop.set()
            await generator

    failed = [r for r in results if r[3] != 200]
    print(
        f"\n{len(results)} requests, {len(failed)} failed, swap {patch_done - patch_started:.3f}s"
    )
    assert not failed
    assert {m for _, _, answered, _, m in results if answered < patch_started} == {old_id}
    assert {m for *_, m in results} == {old_id, new_id}
    for replica in range(len(cluster.urls)):  # each replica switches once, never back
        served = [m for r, *_, m in results if r == replica]
        first_new = served.index(new_id)
        assert set(served[first_new:]) == {new_id}, (replica, served)
    # Every replica heard the one slot_changed over Redis (its routing cache drops the
    # project on it; the cache's TTL is only the fallback for a lost event).
    heard = [_counter(cluster, r, SLOT_CHANGE_HEARD) for r in (0, 1)]
    assert [after - before for after, before in zip(heard, heard_before, strict=True)] == [1, 1]


def test_conch_export_register_is_served_by_both_replicas(
    events_cluster: Cluster, tmp_path: Path
) -> None:
    """The real command: train, export with parity check, --register; no restart anywhere."""
    cluster = events_cluster
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
    cluster.wait_loaded_everywhere(model_id)
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
