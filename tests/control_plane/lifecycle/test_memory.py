"""LRU beyond INFERENCE_MAX_LOADED_MODELS, pinned models never evicted, loads on demand.

What is loaded is asked of each replica's Triton (its repository index), never of
Conch's bookkeeping: that would say "unloaded" even when Triton's unload failed.
"""

from __future__ import annotations

import time

import httpx

from tests.control_plane.lifecycle.conftest import DEADLINE_S, MAX_LOADED, Cluster


def _assert_ready(cluster: Cluster) -> None:
    for url in cluster.urls:
        response = httpx.get(f"{url}/inference/ready", timeout=5)
        assert response.status_code == 200, response.text


def _triton_name(cluster: Cluster, model_id: int) -> str:
    response = httpx.get(f"{cluster.urls[0]}/api/v1/models/{model_id}", headers=cluster.admin)
    assert response.status_code == 200, response.text
    name: str = response.json()["triton_name"]
    return name


def test_five_models_two_unpinned_slots_pinned_never_evicted(cluster: Cluster) -> None:
    names = [cluster.new_model() for _ in range(5)]
    ids = [cluster.register(name) for name in names]
    # model_trained loads them one after the other and LRU evicts as it goes, so most of
    # these predicts find their model evicted and load it again on demand.
    for model_id in ids:
        for url in cluster.urls:
            response = httpx.post(
                f"{url}/inference/predict/{model_id}",
                json={"user_id": "u2"},
                headers=cluster.admin,
                timeout=DEADLINE_S,
            )
            assert response.status_code == 200, response.text
            assert response.json()["model_id"] == model_id
        _assert_ready(cluster)
    # Each replica's Triton ends up holding the slot's model and the two most recently
    # used (the last two predicted), nothing else: every other model really unloaded.
    pinned = _triton_name(cluster, cluster.slot_model_id)
    expected = {pinned, *names[-MAX_LOADED:]}
    for replica in range(len(cluster.urls)):
        deadline = time.monotonic() + DEADLINE_S
        while (in_triton := cluster.triton_ready(replica)) != expected:
            # Eviction runs in the background right after each load.
            assert time.monotonic() < deadline, (replica, sorted(in_triton), sorted(expected))
            time.sleep(0.1)
    _assert_ready(cluster)
    engine = httpx.get(f"{cluster.urls[0]}/api/v1/engine", headers=cluster.admin).json()
    assert engine["version"] != "unknown" and engine["max_loaded_models"] == MAX_LOADED
