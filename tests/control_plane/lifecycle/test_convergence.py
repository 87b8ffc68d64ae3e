"""Pub/Sub is lossy: SQL plus periodic reconciliation make every replica converge anyway."""

from __future__ import annotations

import time

import httpx

from tests.control_plane.lifecycle.conftest import RECONCILE_S, Cluster, load_slack_s


def _bound_s() -> float:
    """One reconciliation period to notice, plus the load and warm-up of a small model."""
    return RECONCILE_S + load_slack_s()


def _listener_ok(url: str) -> bool:
    return httpx.get(f"{url}/inference/health", timeout=5).json()["components"]["listener"] == "ok"


def test_model_registered_while_redis_down_converges_after_restart(cluster: Cluster) -> None:
    cluster.redis.stop()
    try:
        model_id = cluster.register(cluster.new_model(), replica=0)  # model_trained is lost
        registered = time.monotonic()
    finally:
        cluster.redis.start()
    elapsed = cluster.wait_loaded_everywhere(model_id, timeout_s=_bound_s() + 5)
    since_registration = time.monotonic() - registered
    print(f"\nRedis back: both replicas converged {since_registration:.2f}s after registration")
    assert since_registration <= _bound_s(), elapsed
    deadline = time.monotonic() + 15
    while not all(_listener_ok(url) for url in cluster.urls):
        assert time.monotonic() < deadline, "listeners did not resubscribe"
        time.sleep(0.1)


def test_model_registered_with_redis_down_throughout_converges_by_reconcile(
    cluster: Cluster,
) -> None:
    cluster.redis.stop()
    try:
        model_id = cluster.register(cluster.new_model(), replica=0)
        elapsed = cluster.wait_loaded_everywhere(model_id, timeout_s=_bound_s() + 5)
        print(f"\nRedis down: both replicas converged {elapsed:.2f}s after registration")
        assert elapsed <= _bound_s()
        health = httpx.get(f"{cluster.urls[1]}/inference/health", timeout=5).json()
        assert health["status"] == "degraded"
        assert health["components"]["redis"] == "down"
    finally:
        cluster.redis.start()
