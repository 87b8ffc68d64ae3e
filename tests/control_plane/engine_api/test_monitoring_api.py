"""Seed 002's monitoring: /api/inference/metrics/{performance,resources} and /health.

Figures are checked against what the test did (predictions through a control
plane of its own, so no other test's traffic is in its window) and against the
host as psutil reads it; health against parts that are really up or really down
(a Triton or Redis address where nothing listens).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI

from conch_embedded.process import free_port
from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.engine_api import monitoring
from tests.control_plane.conftest import make_key, make_project, state_of
from tests.control_plane.engine_api.tabular_model import export_regressor, predict_rows

NO_NVML = importlib.util.find_spec("pynvml") is None
NEUTRAL = {"healthy", "not_configured", "not_measured"}


@asynccontextmanager
async def control_plane(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A control plane of its own over `settings`: its own counters, its own probes."""
    app = create_app(settings, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://own") as client:
            yield client


@pytest.fixture(scope="module")
async def regressor_id(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> int:
    triton_name = export_regressor(model_repository, tmp_path_factory.mktemp("monitoring"))
    response = await client.post(
        "/api/v1/models", json={"triton_name": triton_name}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    model_id: int = response.json()["id"]
    return model_id


def _headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _consistent(body: dict[str, Any]) -> None:
    """The overall status follows from the checks, and each bad check says why."""
    checks = body["checks"]
    vital_down = "unhealthy" in (checks["engine_status"], checks["database"])
    if vital_down:
        assert body["status"] == "unhealthy"
    elif set(checks.values()) <= NEUTRAL:
        assert body["status"] == "healthy"
    else:
        assert body["status"] == "degraded"
    bad = {name for name, state in checks.items() if state not in NEUTRAL}
    assert set(body["reasons"]) == bad
    assert re.fullmatch(r"\d+h \d{1,2}m \d{1,2}s", body["uptime"])
    stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)


async def test_health_needs_no_key_and_probes_every_part(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.get("/api/inference/health")
    assert response.status_code == 200, response.text
    body = response.json()
    checks = body["checks"]
    assert set(checks) == {
        "engine_status",
        "database",
        "redis",
        "memory_usage",
        "model_loading",
        "inference_performance",
    }
    assert checks["engine_status"] == checks["database"] == checks["redis"] == "healthy"
    assert body["status"] in ("healthy", "degraded")
    _consistent(body)
    assert body["version"] == app.version
    started = psutil.Process().create_time()
    assert body["uptime_s"] == pytest.approx(datetime.now().timestamp() - started, abs=60)


async def test_health_is_unhealthy_503_when_triton_is_down(
    settings: Settings, admin_key: str, regressor_id: int
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    down = settings.model_copy(
        update={"triton_grpc_url": dead, "triton_http_url": f"http://{dead}"}
    )
    async with control_plane(down) as client:
        failures = 3
        for _ in range(failures):  # reach the model core, and fail at Triton
            response = await predict_rows(client, regressor_id, admin_key)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "TritonUnavailableError"
        response = await client.get("/api/inference/health")
        performance = await client.get(
            "/api/inference/metrics/performance", headers=_headers(admin_key)
        )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["engine_status"] == "unhealthy"
    assert body["checks"]["database"] == "healthy"
    assert body["checks"]["inference_performance"] == "degraded"
    assert (
        f"{failures} of {failures} predictions failed" in body["reasons"]["inference_performance"]
    )
    _consistent(body)
    assert dead not in response.text
    assert performance.status_code == 200, performance.text
    figures = performance.json()
    assert figures["model_metrics"]["active_models"] is None  # Triton unreachable: unknown
    requests = figures["request_metrics"]
    assert requests["total_requests"] == requests["failed_requests"] == failures
    assert requests["successful_requests"] == 0 and requests["p95_response_time"] is None


async def test_health_is_degraded_when_redis_is_down_or_memory_is_short(
    settings: Settings,
) -> None:
    degraded = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "model_events_redis_url": None,
            "rate_limit_enabled": False,
            # Any host uses more than this: the check must say so.
            "health_memory_degraded_percent": 0.001,
        }
    )
    async with control_plane(degraded) as client:
        response = await client.get("/api/inference/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"] == "unhealthy"
    assert body["checks"]["memory_usage"] == "degraded"
    assert body["checks"]["engine_status"] == body["checks"]["database"] == "healthy"
    assert "% of host memory in use" in body["reasons"]["memory_usage"]
    _consistent(body)


async def test_performance_metrics_are_this_replicas_measured_window(
    app: FastAPI, settings: Settings, admin_key: str, regressor_id: int
) -> None:
    triton = state_of(app).triton
    async with control_plane(settings) as client:
        predictions = 9
        for _ in range(predictions):
            response = await predict_rows(client, regressor_id, admin_key)
            assert response.status_code == 200, response.text
        ready_before = len(await triton.ready_models())
        response = await client.get(
            "/api/inference/metrics/performance", headers=_headers(admin_key)
        )
        ready_after = len(await triton.ready_models())
    assert response.status_code == 200, response.text
    body = response.json()
    requests = body["request_metrics"]
    assert requests["total_requests"] == requests["successful_requests"] == predictions
    assert requests["failed_requests"] == 0
    assert 0 < requests["average_response_time"] <= requests["p99_response_time"]
    assert requests["p95_response_time"] <= requests["p99_response_time"]
    assert requests["requests_per_second"] == pytest.approx(
        predictions / requests["window_s"], rel=1e-2
    )
    resources = body["resource_metrics"]
    assert 0.0 <= resources["cpu_usage"] <= 100.0
    rss_mb = psutil.Process().memory_info().rss / 1024 / 1024
    assert resources["memory_usage_mb"] == pytest.approx(rss_mb, rel=0.25)
    if NO_NVML:
        assert resources["gpu_usage"] is None and resources["gpu_memory_mb"] is None
    models = body["model_metrics"]
    assert (
        min(ready_before, ready_after) <= models["active_models"] <= max(ready_before, ready_after)
    )
    assert models["active_models"] >= 1  # the regressor just served
    assert models["cache_hit_rate"] is None  # not measured: never invented


async def test_resources_are_the_hosts(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    response = await client.get("/api/inference/metrics/resources", headers=_headers(admin_key))
    assert response.status_code == 200, response.text
    body = response.json()
    cpu, memory, disk = body["cpu"], body["memory"], body["disk"]
    assert cpu["cores"] == psutil.cpu_count(logical=True)
    assert len(cpu["load_average"]) == 3
    assert 0.0 <= cpu["usage_percent"] <= 100.0
    assert memory["total_mb"] == pytest.approx(psutil.virtual_memory().total / 1024**2, abs=0.1)
    assert memory["used_mb"] + memory["free_mb"] == pytest.approx(memory["total_mb"], abs=0.2)
    on_disk = psutil.disk_usage(str(model_repository))
    assert disk["total_gb"] == pytest.approx(on_disk.total / 1024**3, abs=0.01)
    assert 0.0 <= disk["usage_percent"] <= 100.0
    if NO_NVML:
        assert body["gpu"] is None  # not measurable here: null, not zeros


@pytest.mark.parametrize("path", ["/metrics/performance", "/metrics/resources"])
async def test_replica_metrics_need_an_unrestricted_read_key(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, path: str
) -> None:
    url = f"/api/inference{path}"
    project = await make_project(client, admin_key, [])
    restricted = await make_key(app, ["read"], project_id=project.id)
    predict_only = await make_key(app, ["predict"])
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers=_headers(predict_only))).status_code == 403
    response = await client.get(url, headers=_headers(restricted))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "PermissionDeniedError"
    assert (
        await client.get(url, headers=_headers(await make_key(app, ["read"])))
    ).status_code == 200


class _FakeNvml:
    """NVML's answers for two GPUs, to check the aggregation only: the test hosts have
    neither a GPU nor nvidia-ml-py."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        mb = 1024 * 1024
        return SimpleNamespace(total=8192 * mb, used=(1024, 3072)[handle] * mb)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        if handle == 1:
            raise self.NVMLError("no sensor")
        return 65

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H200"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=(50, 100)[handle])


async def test_gpus_are_summed_averaged_and_the_hottest_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = monitoring._Nvml()
    nvml._tried, nvml._module = True, _FakeNvml()  # type: ignore[assignment]
    monkeypatch.setattr(monitoring, "_NVML", nvml)
    gpu = await monitoring.gpu_usage()
    assert gpu is not None
    assert (gpu.count, gpu.usage_percent, gpu.temperature) == (2, 75.0, 65.0)
    assert (gpu.memory_total_mb, gpu.memory_used_mb) == (16384.0, 4096.0)
    assert [d.name for d in gpu.devices] == ["NVIDIA H200"] * 2
    assert gpu.devices[1].temperature is None


@pytest.mark.skipif(not NO_NVML, reason="nvidia-ml-py is installed here")
async def test_without_nvml_the_gpu_is_null() -> None:
    assert await monitoring.gpu_usage() is None
