"""Pub/Sub is lossy: SQL plus periodic reconciliation make every replica converge anyway.

Each test waits for convergence itself (DEADLINE_S is a guard against a hang, not a
speed claim): while Redis is down no event can explain it, only reconciliation.
"""

from __future__ import annotations

import httpx

from tests.control_plane.lifecycle.conftest import Cluster


def test_model_registered_while_redis_down_converges_after_restart(cluster: Cluster) -> None:
    cluster.redis.stop()
    try:
        model_id = cluster.register(cluster.new_model(), replica=0)  # model_trained is lost
    finally:
        cluster.redis.start()
    cluster.wait_listening()
    elapsed = cluster.wait_loaded_everywhere(model_id)
    print(f"\nRedis back: both replicas converged {elapsed:.2f}s after the restart")
    cluster.wait_listening()


def test_model_registered_with_redis_down_throughout_converges_by_reconcile(
    cluster: Cluster,
) -> None:
    cluster.redis.stop()
    try:
        model_id = cluster.register(cluster.new_model(), replica=0)
        elapsed = cluster.wait_loaded_everywhere(model_id)
        print(f"\nRedis down: both replicas converged {elapsed:.2f}s after registration")
        health = httpx.get(f"{cluster.urls[1]}/inference/health", timeout=5).json()
        assert health["status"] == "degraded"
        assert health["components"]["redis"] == "down"
    finally:
        cluster.redis.start()
    cluster.wait_listening()


def test_slot_change_while_redis_down_is_served_at_once_by_every_replica(
    cluster: Cluster,
) -> None:
    new_id = cluster.register(cluster.new_model())
    cluster.wait_loaded_everywhere(new_id)

    def served_by(replica: int) -> int:
        response = httpx.post(
            f"{cluster.urls[replica]}/inference/predict/project/{cluster.project_id}",
            json={"user_id": "u1"},
            headers=cluster.admin,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        model_id: int = response.json()["model_id"]
        return model_id

    assert served_by(1) == cluster.slot_model_id  # replica 1 has the routing cached
    cluster.redis.stop()
    try:
        response = httpx.patch(
            f"{cluster.urls[0]}/api/v1/slots/{cluster.slot_id}",
            json={"model_id": new_id},
            headers=cluster.admin,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        cluster.slot_model_id = new_id
        # No slot_changed can reach replica 1, and its cache TTL has not run out.
        assert served_by(1) == new_id
    finally:
        cluster.redis.start()
    cluster.wait_listening()
