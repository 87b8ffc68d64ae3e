"""Two replicas (control plane + its own embedded Triton each) over one Redis and one SQL.

Started once for the whole directory: Triton start-up is the expensive part. The
replicas reconcile every 2 s and keep at most two unpinned models loaded. Every wait
ends as soon as its condition holds; DEADLINE_S only guards against a hang.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tritonclient.grpc import InferenceServerClient

from conch_embedded.redis_server import EmbeddedRedis
from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.layout import manifest_path
from conch_manifest.schema import sha256_file
from control_plane.cli.keys_db import create_key_in_database
from control_plane.core.settings import Settings
from control_plane.db import upgrade
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.replicas import uvicorn_replica
from tests.control_plane.secret_key import TEST_SECRET_KEY

RECONCILE_S = 2.0
MAX_LOADED = 2
REPLICA_ENV = {
    "INFERENCE_MAX_LOADED_MODELS": str(MAX_LOADED),
    "CONCH_RECONCILE_INTERVAL_S": str(RECONCILE_S),
    # Redis is stopped on purpose below: no per-process rate-limit fallback in the way.
    "CONCH_RATE_LIMIT_ENABLED": "false",
    # A cold load takes 2-3 s here, several times that while other test suites share
    # the two cores: requests wait for it rather than get 503 + Retry-After.
    "CONCH_MODEL_LOAD_WAIT_S": "30",
}


# A guard against a hang, never a speed claim: loads take seconds here, many more while
# other suites share the two cores.
DEADLINE_S = 60.0


@dataclass
class Cluster:
    urls: list[str]
    redis: EmbeddedRedis
    repository: Path
    admin_key: str
    base_model_id: int
    project_id: int
    slot_id: int
    seeds: list[int]
    slot_model_id: int = 0  # what the project's only slot serves now
    triton_grpc_urls: list[str] = field(default_factory=list)  # replica i's own Triton

    @property
    def admin(self) -> dict[str, str]:
        return {"X-API-Key": self.admin_key}

    def new_model(self, *, corrupt: bool = False) -> str:
        """Write a fresh recommender (a new seed: new weights) into the shared repository."""
        seed = 100 + len(self.seeds)
        self.seeds.append(seed)
        name = f"lc_{uuid.uuid4().hex[:8]}"
        write_recommender(self.repository, name, seed)
        if corrupt:
            _corrupt(self.repository, name)
        return name

    def register(self, triton_name: str, replica: int = 0) -> int:
        response = httpx.post(
            f"{self.urls[replica]}/api/v1/models",
            json={"triton_name": triton_name},
            headers=self.admin,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        model_id: int = response.json()["id"]
        return model_id

    def loaded_ids(self, replica: int) -> set[int]:
        response = httpx.get(f"{self.urls[replica]}/inference/models", timeout=15)
        return set(response.json()["models"])

    def triton_ready(self, replica: int) -> set[str]:
        """Models READY in the replica's own Triton, from Triton's repository index
        (never from Conch's bookkeeping, which a failed unload would not correct)."""
        with InferenceServerClient(self.triton_grpc_urls[replica]) as triton:
            index = triton.get_model_repository_index(as_json=True)
        return {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}

    def wait_listening(self, timeout_s: float = 20.0) -> None:
        """Until every replica's event listener is subscribed (after a Redis restart it
        reconnects with backoff, and events sent meanwhile reach no one)."""
        deadline = time.monotonic() + timeout_s
        while not all(_listener_ok(url) for url in self.urls):
            assert time.monotonic() < deadline, "listeners did not resubscribe"
            time.sleep(0.1)

    def wait_loaded_everywhere(self, model_id: int, timeout_s: float = DEADLINE_S) -> float:
        """Seconds until every replica lists the model as loaded."""
        started = time.monotonic()
        pending = set(range(len(self.urls)))
        while pending:
            pending = {r for r in pending if model_id not in self.loaded_ids(r)}
            if not pending:
                break
            assert time.monotonic() - started < timeout_s, f"replicas {pending} did not load"
            time.sleep(0.05)
        return time.monotonic() - started


def _listener_ok(url: str) -> bool:
    health = httpx.get(f"{url}/inference/health", timeout=5).json()
    return bool(health["components"]["listener"] == "ok")


def _corrupt(repository: Path, triton_name: str) -> None:
    """Garbage in place of the ONNX file, with a manifest that vouches for it: registration
    accepts it (hashes match) and only Triton's load can tell."""
    model_file = repository / triton_name / "1" / "model.onnx"
    model_file.write_bytes(b"this is not an onnx model" * 10)
    path = manifest_path(repository, triton_name)
    manifest = json.loads(path.read_text())
    manifest["files"]["1/model.onnx"] = sha256_file(model_file)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _start_triton(repository: Path) -> EmbeddedTriton:
    server = EmbeddedTriton.on_free_ports(repository)
    return server.start()


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory, REPLICA_ENV) as started:
        yield started


@contextmanager
def start_cluster(
    tmp_path_factory: pytest.TempPathFactory, replica_env: dict[str, str]
) -> Iterator[Cluster]:
    repository = tmp_path_factory.mktemp("lifecycle_repository")
    write_recommender(repository, "lc_base", seed=7)
    database_url = f"sqlite:///{tmp_path_factory.mktemp('lifecycle_sql') / 'conch.db'}"
    upgrade(database_url)
    logs = tmp_path_factory.mktemp("lifecycle_logs")
    with ExitStack() as stack:
        redis = stack.enter_context(EmbeddedRedis())
        # One after the other, from this thread: Triton dies with the thread that spawned it.
        tritons = [_start_triton(repository) for _ in range(2)]
        for triton in tritons:
            stack.callback(triton.stop)
        settings = [
            Settings(
                environment="test",
                secret_key=TEST_SECRET_KEY,
                database_url=database_url,
                redis_url=redis.url,
                model_events_redis_url=redis.url,
                triton_grpc_url=triton.grpc_url,
                triton_http_url=triton.http_url,
                model_repository=repository,
            )
            for triton in tritons
        ]
        urls = [stack.enter_context(uvicorn_replica(s, logs, replica_env)) for s in settings]
        admin_key = asyncio.run(create_key_in_database(settings[0], scopes=["admin"]))
        headers = {"X-API-Key": admin_key}
        base = httpx.post(
            f"{urls[0]}/api/v1/models", json={"triton_name": "lc_base"}, headers=headers
        ).json()["id"]
        project = httpx.post(
            f"{urls[0]}/api/v1/projects", json={"name": "lifecycle"}, headers=headers
        ).json()["id"]
        slot = httpx.post(
            f"{urls[0]}/api/v1/projects/{project}/slots",
            json={"name": "main", "model_id": base, "weight": 100},
            headers=headers,
            timeout=60,
        )
        assert slot.status_code == 201, slot.text
        yield Cluster(
            urls,
            redis,
            repository,
            admin_key,
            base,
            project,
            slot.json()["id"],
            [],
            base,
            [triton.grpc_url for triton in tritons],
        )
