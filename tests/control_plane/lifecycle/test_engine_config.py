"""Seed 002's engine configuration across replicas, each with its own Triton.

A change stored through one replica is in that replica's Triton when the PUT
answers, and in every other replica's Triton moments later (the event, else the
next reconcile pass), read from each Triton's own model config.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from tritonclient.grpc import InferenceServerClient

from control_plane.lifecycle.tuning import batching_of
from tests.control_plane.lifecycle.conftest import DEADLINE_S, Cluster

CONFIG = "/api/inference/engine/config"
DEFAULTS = {
    "max_batch_size": None,
    "batch_timeout_ms": None,
    "max_concurrent_requests": None,
    "model_cache_size": None,
}


def _triton_config(cluster: Cluster, replica: int, name: str) -> dict[str, Any]:
    with InferenceServerClient(cluster.triton_grpc_urls[replica]) as triton:
        config: dict[str, Any] = triton.get_model_config(name, as_json=True)["config"]
    return config


def _delay_us(cluster: Cluster, replica: int, name: str) -> int:
    return batching_of(_triton_config(cluster, replica, name)).max_queue_delay_microseconds


def _wait_delay(cluster: Cluster, replica: int, name: str, expected: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while _delay_us(cluster, replica, name) != expected:
        assert time.monotonic() < deadline, f"replica {replica} kept its old batching"
        time.sleep(0.1)


def test_a_change_reaches_the_triton_of_every_replica(cluster: Cluster) -> None:
    cluster.wait_loaded_everywhere(cluster.base_model_id)
    try:
        response = httpx.put(
            f"{cluster.urls[0]}{CONFIG}",
            json={"batch_timeout_ms": 7, "max_batch_size": 4},
            headers=cluster.admin,
            timeout=DEADLINE_S,
        )
        assert response.status_code == 200, response.text
        revision = response.json()["revision"]
        # On the replica that stored it: already applied when the PUT answers.
        batching = batching_of(_triton_config(cluster, 0, "lc_base"))
        assert batching.max_queue_delay_microseconds == 7000
        assert batching.preferred_batch_size == [4]
        _wait_delay(cluster, 1, "lc_base", 7000)
        assert batching_of(_triton_config(cluster, 1, "lc_base")).preferred_batch_size == [4]
        seen = httpx.get(f"{cluster.urls[1]}{CONFIG}", headers=cluster.admin, timeout=15)
        assert seen.json()["revision"] == revision
        assert seen.json()["batch_timeout_ms"] == 7
    finally:  # the cluster is shared by the whole directory: defaults again, everywhere
        reset = httpx.put(
            f"{cluster.urls[1]}{CONFIG}", json=DEFAULTS, headers=cluster.admin, timeout=DEADLINE_S
        )
        assert reset.status_code == 200, reset.text
    assert _delay_us(cluster, 1, "lc_base") == 0
    _wait_delay(cluster, 0, "lc_base", 0)
