"""LRU beyond INFERENCE_MAX_LOADED_MODELS, pinned models never evicted, loads on demand."""

from __future__ import annotations

import time

import httpx

from tests.control_plane.lifecycle.conftest import MAX_LOADED, Cluster


def _engine(cluster: Cluster, replica: int) -> dict[str, object]:
    url = cluster.urls[replica]
    response = httpx.get(f"{url}/api/v1/engine", headers=cluster.admin, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _loaded(cluster: Cluster, replica: int) -> tuple[set[str], set[str]]:
    """(pinned, unpinned) models loaded on a replica, as its engine status reports them."""
    models = _engine(cluster, replica)["loaded_models"]
    assert isinstance(models, list)
    pinned = {m["triton_name"] for m in models if m["pinned"]}
    return pinned, {m["triton_name"] for m in models if not m["pinned"]}


def _assert_pinned_loaded(cluster: Cluster) -> None:
    for url in cluster.urls:
        response = httpx.get(f"{url}/inference/ready", timeout=5)
        assert response.status_code == 200, response.text


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
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert response.json()["model_id"] == model_id
        _assert_pinned_loaded(cluster)
    deadline = time.monotonic() + 10
    for replica in range(len(cluster.urls)):
        while True:  # eviction runs in the background right after each load
            pinned, unpinned = _loaded(cluster, replica)
            if len(unpinned) <= MAX_LOADED:
                break
            assert time.monotonic() < deadline, unpinned
            time.sleep(0.1)
        assert pinned  # the slot's model
    _assert_pinned_loaded(cluster)
    engine = _engine(cluster, 0)
    assert engine["version"] != "unknown" and engine["max_loaded_models"] == MAX_LOADED
