"""`/metrics` as Prometheus reads it: requests by route template, Triton calls by
model, rate-limit decisions, caches, and several workers' values summed.

The families are this process's and earlier tests moved them too: each test
compares two scrapes around its own requests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from control_plane.cli import worker_metrics
from tests.control_plane.conftest import make_key
from tests.control_plane.waiting import until_served

REQUESTS = "conch_http_request_duration_seconds"
PREDICT_ROUTE = "/inference/predict/{model_id}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parsed(exposition: str) -> Samples:
    """Every sample by name and labels; the text must parse as Prometheus parses it."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def _scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return _parsed(response.text)


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


def _routes(samples: Samples) -> set[str]:
    return {dict(labels)["route"] for name, labels in samples if name == f"{REQUESTS}_count"}


async def _predict(client: httpx.AsyncClient, model_id: int, key: str) -> httpx.Response:
    return await client.post(
        f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers={"X-API-Key": key}
    )


async def test_requests_are_counted_by_route_template_never_by_path(
    app: FastAPI, client: httpx.AsyncClient, model_ids: Mapping[str, int], admin_key: str
) -> None:
    key = await make_key(app, ["predict"])
    for model_id in model_ids.values():
        await until_served(client, model_id, key)
    before = await _scrape(client)
    for model_id in model_ids.values():  # two ids, served by the fast lane: one series
        assert (await _predict(client, model_id, key)).status_code == 200
    model = f"/api/v1/models/{model_ids['a']}"  # a FastAPI route
    assert (await client.get(model, headers={"X-API-Key": admin_key})).status_code == 200
    assert (await client.get("/inference/no-such/route/7")).status_code == 404
    after = await _scrape(client)

    ok = {"method": "POST", "status": "200"}
    assert _moved(before, after, f"{REQUESTS}_count", route=PREDICT_ROUTE, **ok) == 2
    got = {"route": "/api/v1/models/{model_id}", "method": "GET", "status": "200"}
    assert _moved(before, after, f"{REQUESTS}_count", **got) == 1
    missing = {"route": "unmatched", "method": "GET", "status": "404"}
    assert _moved(before, after, f"{REQUESTS}_count", **missing) == 1
    every_bucket = {"route": PREDICT_ROUTE, "le": "+Inf", **ok}
    assert _moved(before, after, f"{REQUESTS}_bucket", **every_bucket) == 2
    routes = _routes(after)
    assert not [route for route in routes if any(part.isdigit() for part in route.split("/"))]
    assert not any("no-such" in route for route in routes)
    # This scrape itself is in flight while it is answered.
    assert _value(after, "conch_http_requests_in_flight") >= 1


async def test_triton_calls_are_timed_by_model(
    app: FastAPI,
    client: httpx.AsyncClient,
    model_ids: Mapping[str, int],
    recommenders: Mapping[str, str],
) -> None:
    key = await make_key(app, ["predict"])
    await until_served(client, model_ids["a"], key)
    before = await _scrape(client)
    assert (await _predict(client, model_ids["a"], key)).status_code == 200
    after = await _scrape(client)
    calls = {"model": recommenders["a"], "outcome": "ok"}
    assert _moved(before, after, "conch_triton_request_duration_seconds_count", **calls) >= 1
    assert _moved(before, after, "conch_triton_request_duration_seconds_sum", **calls) > 0
    # The key was verified from the cache, the model found in the catalog's.
    hit = {"result": "hit"}
    assert _moved(before, after, "conch_cache_lookups_total", cache="api_keys", **hit) >= 1
    assert _moved(before, after, "conch_cache_lookups_total", cache="models", **hit) >= 1


async def test_rate_limit_decisions_are_counted(
    app: FastAPI, client: httpx.AsyncClient, model_ids: Mapping[str, int]
) -> None:
    warm = await make_key(app, ["predict"])
    await until_served(client, model_ids["a"], warm)
    key = await make_key(app, ["predict"], rate_limit="1/minute")
    before = await _scrape(client)
    assert (await _predict(client, model_ids["a"], key)).status_code == 200
    assert (await _predict(client, model_ids["a"], key)).status_code == 429
    after = await _scrape(client)
    decisions = "conch_rate_limit_decisions_total"
    assert _moved(before, after, decisions, decision="allowed") == 1
    assert _moved(before, after, decisions, decision="limited") == 1
    refused = {"route": PREDICT_ROUTE, "method": "POST", "status": "429"}
    assert _moved(before, after, f"{REQUESTS}_count", **refused) == 1


_WRITER = """
from control_plane.core import metrics
metrics.RATE_LIMIT_ALLOWED.inc(3)
metrics.HTTP_REQUEST_SECONDS.labels("/r/{id}", "GET", "200").observe(0.002)
metrics.HTTP_IN_FLIGHT.inc()  # never taken back: the process exits mid-request
"""


def _in_process(directory: Path, code: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_several_workers_values_are_summed(tmp_path: Path) -> None:
    for _ in range(2):  # two worker processes, one after the other, one directory
        _in_process(tmp_path, _WRITER)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    summed = _parsed(generate_latest(registry).decode())
    assert _value(summed, "conch_rate_limit_decisions_total", decision="allowed") == 6
    request = {"route": "/r/{id}", "method": "GET", "status": "200"}
    assert _value(summed, f"{REQUESTS}_count", **request) == 2
    assert _value(summed, f"{REQUESTS}_bucket", le="0.0025", **request) == 2

    # What a worker's /metrics serves: the same sums; the exited workers' requests
    # are no longer in flight.
    served = _in_process(
        tmp_path, "import sys; from control_plane.core import metrics; "
        "sys.stdout.write(metrics.exposition().decode())",
    )  # fmt: skip
    samples = _parsed(served)
    assert _value(samples, "conch_rate_limit_decisions_total", decision="allowed") == 6
    assert _value(samples, "conch_http_requests_in_flight") == 0


def test_conch_serve_gives_several_workers_a_fresh_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(worker_metrics.VARIABLE, raising=False)
    with worker_metrics.worker_metrics(1) as directory:
        assert directory is None and worker_metrics.VARIABLE not in os.environ
    with worker_metrics.worker_metrics(4) as directory:
        assert directory is not None and os.environ[worker_metrics.VARIABLE] == directory
        assert os.listdir(directory) == []
    assert not os.path.exists(directory) and worker_metrics.VARIABLE not in os.environ

    # A directory the operator named is kept, emptied of an earlier run's files.
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv(worker_metrics.VARIABLE, str(tmp_path))
    with worker_metrics.worker_metrics(4) as directory:
        assert directory == str(tmp_path) and list(tmp_path.iterdir()) == []
