"""docker-compose.gpu.yml cannot be started here (no Docker engine): check it by reading."""

from __future__ import annotations

from pathlib import Path

import yaml

from conch_manifest.locations import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.gpu.yml").read_text())


def test_triton_runs_explicit_model_control_on_the_gpu() -> None:
    triton = COMPOSE["services"]["triton"]
    assert "--model-control-mode=explicit" in triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "./model_repository:/models:ro" in triton["volumes"]


def test_control_plane_drives_that_triton_and_refuses_a_default_secret() -> None:
    plane = COMPOSE["services"]["control-plane"]
    assert plane["command"][plane["command"].index("--triton-url") + 1] == "triton:8001"
    assert plane["environment"]["CONCH_ENVIRONMENT"] == "production"
    assert ":?" in plane["environment"]["SECRET_KEY"]  # compose refuses to start without it
    assert set(plane["depends_on"]) == {"triton", "redis", "postgres"}


def test_dockerfile_installs_the_packages_compose_builds() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for path in ("control_plane", "conch_manifest", "exporters", "triton"):
        assert f"COPY {path}" in dockerfile
        assert (Path(PROJECT_ROOT) / path).is_dir()
    for development_only in ("conch_embedded", "conch_bench"):
        assert f"COPY {development_only}" not in dockerfile
    assert "RUN pip install --no-cache-dir .\n" in dockerfile  # no extras
