"""Seeding the demo against real SQL, Redis and a running replica: each run's keys
replace the previous run's, and the replica drops the revoked ones at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conch_embedded.demo.seed import DEMO_SLOTS, seed_demo
from conch_embedded.triton_server import EmbeddedTriton
from control_plane.core.settings import Settings
from control_plane.keys.tokens import display_prefix
from tests.control_plane.conftest import stack_settings
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.replicas import uvicorn_replica


@dataclass(frozen=True)
class DemoRecommenders:
    recommenders: Mapping[str, str] = field(
        default_factory=lambda: {label: f"demoseed_{label}" for label in DEMO_SLOTS.values()}
    )


@pytest.fixture(scope="module")
def settings(
    database_url: str, redis_url: str, triton: EmbeddedTriton, model_repository: Path
) -> Settings:
    return stack_settings(database_url, redis_url, triton, model_repository)


@pytest.fixture(scope="module")
def demo_models(model_repository: Path) -> DemoRecommenders:
    models = DemoRecommenders()
    for seed, triton_name in enumerate(models.recommenders.values(), start=1):
        write_recommender(model_repository, triton_name, seed)
    return models


@pytest.fixture(scope="module")
def replica(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Verified keys stay cached for an hour: only the key_revoked event can drop one.
    extra = {"CONCH_KEY_CACHE_TTL_S": "3600"}
    with uvicorn_replica(settings, tmp_path_factory.mktemp("demo-seed"), extra) as url:
        _wait_for(lambda: _listener(url) == "ok", "the replica's event listener subscribed")
        yield url


def _listener(url: str) -> str:
    return str(httpx.get(f"{url}/inference/health", timeout=5).json()["components"]["listener"])


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    # A generous bound on an awaited condition, not a timing assertion.
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"not in 30 s: {what}"
        time.sleep(0.1)


def _keys_status(url: str, key: str) -> int:
    return httpx.get(f"{url}/api/v1/keys", headers={"X-API-Key": key}, timeout=10).status_code


def test_a_second_seeding_revokes_the_first_demo_keys(
    settings: Settings, demo_models: DemoRecommenders, replica: str
) -> None:
    first = asyncio.run(seed_demo(settings, demo_models))
    assert _keys_status(replica, first.admin_key) == 200
    assert _keys_status(replica, first.predict_key) == 403  # verified and cached: no admin

    second = asyncio.run(seed_demo(settings, demo_models))

    _wait_for(
        lambda: (
            _keys_status(replica, first.admin_key) == 401
            and _keys_status(replica, first.predict_key) == 401
        ),
        "the replica refuses the first run's keys",
    )
    assert _keys_status(replica, second.admin_key) == 200
    assert _keys_status(replica, second.predict_key) == 403  # valid, lacks the admin scope
    assert second.project_id == first.project_id
    keys = httpx.get(
        f"{replica}/api/v1/keys", headers={"X-API-Key": second.admin_key}, timeout=10
    ).json()
    live = [
        k["display_prefix"]
        for k in keys
        if k["name"] in ("demo predict", "demo admin") and k["revoked_at"] is None
    ]
    assert sorted(live) == sorted(display_prefix(k) for k in (second.admin_key, second.predict_key))
