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


def _mounts(service: str) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (read-only ones only)."""
    mounts = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        host, container, *mode = volume.split(":")
        if host.startswith("./") and mode == ["ro"]:
            mounts[container] = host
    return mounts


def test_prometheus_and_grafana_are_pinned_and_provisioned_from_the_repository() -> None:
    for service in ("prometheus", "grafana"):
        image = COMPOSE["services"][service]["image"]
        assert ":" in image and not image.endswith(":latest"), image
    prometheus = _mounts("prometheus")
    config = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["/etc/prometheus"] == "./deploy/prometheus"
    assert (
        "--config.file=/etc/prometheus/prometheus.yml"
        in COMPOSE["services"]["prometheus"]["command"]
    )
    # rules.yml is found beside prometheus.yml, in the mounted directory.
    assert config["rule_files"] == ["rules.yml"]
    assert (PROJECT_ROOT / "deploy/prometheus/rules.yml").is_file()
    # It scrapes the compose services by their names and ports.
    plane_port = COMPOSE["services"]["control-plane"]["ports"][0].split(":")[-1]
    targets = {
        job["job_name"]: (job["dns_sd_configs"][0]["names"], job["dns_sd_configs"][0]["port"])
        for job in config["scrape_configs"]
    }
    assert targets == {"conch": (["control-plane"], int(plane_port)), "triton": (["triton"], 8002)}

    grafana = _mounts("grafana")
    provisioning = PROJECT_ROOT / grafana["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards/conch.yml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboard = grafana[f"{folder}/conch-dashboard.json"]
    assert (PROJECT_ROOT / dashboard).is_file() and dashboard.endswith(".json")
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert ":?" in COMPOSE["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
