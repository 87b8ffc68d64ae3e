"""deploy/k8s: every kustomization renders, validates against the Kubernetes schemas
offline, and keeps the invariants a production deployment of Conch relies on."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from conch_manifest.locations import PROJECT_ROOT
from control_plane.core.setting_values import secret_key_refusal
from control_plane.core.settings import Settings
from control_plane.inference.routes import router as inference_router
from tests.deploy import k8s_render as k8s
from tests.deploy import promql
from tests.deploy.k8s_render import OVERLAYS, SECRET_VARIABLES, TARGETS, Object


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Object, ...]]:
    return k8s.rendered()


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_pinned_kubernetes(
    rendered: dict[str, tuple[Object, ...]], target: str
) -> None:
    objects = rendered[target]
    assert objects, f"{target} rendered nothing"
    built_in = [o for o in objects if (o["apiVersion"], o["kind"]) not in k8s.CUSTOM_RESOURCES]
    errors = [error for obj in built_in if (error := k8s.validation_error(obj))]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_one_namespace_that_enforces_restricted_pods(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    objects = rendered[overlay]
    namespace = k8s.one(objects, "Namespace", "conch")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        "conch"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_real_health_paths(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    pod = k8s.server_pod(rendered[overlay])
    conch, triton = k8s.container(pod, "conch"), k8s.container(pod, "triton")
    assert conch["livenessProbe"]["httpGet"]["path"] == "/inference/health"
    assert conch["readinessProbe"]["httpGet"]["path"] == "/inference/ready"
    paths = {route.path for route in inference_router.routes}  # type: ignore[attr-defined]
    assert {"/inference/health", "/inference/ready"} <= paths
    assert triton["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe in conch and probe in triton, probe


def _images(objects: tuple[Object, ...]) -> list[str]:
    pods = k8s.pod_specs(objects).values()
    return [c["image"] for pod in pods for c in k8s.containers(pod)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned_and_triton_is_the_embedded_release(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    for image in _images(rendered[overlay]):
        tag = image.rpartition("/")[2].partition(":")[2]
        assert "@sha256:" in image or (tag and tag != "latest"), image
    pod = k8s.server_pod(rendered[overlay])
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.gpu.yml").read_text())
    assert k8s.container(pod, "triton")["image"] == compose["services"]["triton"]["image"]
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert k8s.container(pod, "conch")["image"].endswith(f":{project['version']}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_runs_as_root_or_keeps_privileges(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    for owner, pod in k8s.pod_specs(rendered[overlay]).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, owner
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        assert pod["automountServiceAccountToken"] is False, owner
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), owner
        assert all("hostPath" not in volume for volume in pod.get("volumes", [])), owner
        for c in k8s.containers(pod):
            context = c["securityContext"]
            where = f"{owner} {c['name']}"
            assert context["runAsUser"] > 0 and context["runAsNonRoot"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert not context.get("privileged"), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    for owner, pod in k8s.pod_specs(rendered[overlay]).items():
        for c in k8s.containers(pod):
            resources = c["resources"]
            for resource in ("cpu", "memory"):
                request = k8s.quantity(resources["requests"][resource])
                limit = k8s.quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{owner} {c['name']} {resource}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_from_the_referenced_secret(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    objects = rendered[overlay]
    assert not k8s.find(objects, "Secret"), "a Secret is created by the operator, never rendered"
    credentials = re.compile(r"://[^/\s]*@")  # user:password@ in a URL
    for owner, pod in k8s.pod_specs(objects).items():
        for c in k8s.containers(pod):
            for variable in c.get("env", []):
                assert "value" not in variable or not credentials.search(variable["value"])
                if variable["name"] in SECRET_VARIABLES:
                    reference = variable["valueFrom"]["secretKeyRef"]
                    assert reference["name"] == "conch-secrets", (owner, variable)
                    assert reference["key"] == variable["name"]
    (config,) = k8s.find(objects, "ConfigMap")
    assert not SECRET_VARIABLES & set(config["data"])
    assert not any(credentials.search(value) for value in config["data"].values())


def test_the_example_secret_key_is_one_conch_refuses() -> None:
    example = (k8s.K8S_DIR / "secrets.example.env").read_text().splitlines()
    values = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
    assert set(values) == SECRET_VARIABLES
    assert secret_key_refusal("production", "0.0.0.0", values["SECRET_KEY"]) is not None
    # Never wired into a kustomization, so it cannot be applied by accident.
    for kustomization in k8s.K8S_DIR.rglob("kustomization.yaml"):
        parsed = yaml.safe_dump(yaml.safe_load(kustomization.read_text()))  # no comments
        assert "secrets.example.env" not in parsed, kustomization


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_holds_only_settings_conch_accepts(
    rendered: dict[str, tuple[Object, ...]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = k8s.find(rendered[overlay], "ConfigMap")
    known = {"PYTHONDONTWRITEBYTECODE", "CONCH_STATE_DIR", "CONCH_MODEL_REPOSITORY"}
    for name, field in Settings.model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None)
        known |= set(aliases) if aliases else {f"CONCH_{name.upper()}"}
    assert set(config["data"]) <= known, set(config["data"]) - known
    for variable, value in config["data"].items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("SECRET_KEY", "x8Jq2vL0pN4tR6wY9zB1cD3fG5hK7mQs")
    settings = Settings(host="0.0.0.0")  # refuses what production would refuse
    assert settings.environment == "production"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_control_plane_drives_the_triton_of_its_own_pod(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    objects = rendered[overlay]
    pod = k8s.server_pod(objects)
    conch, triton = k8s.container(pod, "conch"), k8s.container(pod, "triton")
    ports = {port["name"]: port["containerPort"] for port in triton["ports"]}
    assert k8s.flag(conch["command"], "--triton-url") == f"127.0.0.1:{ports['triton-grpc']}"
    assert k8s.flag(conch["command"], "--triton-http-url") == f"127.0.0.1:{ports['triton-http']}"
    # One volume, mounted where each side is told the repository is.
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in (conch, triton)}
    repository = k8s.flag(conch["command"], "--repository")
    assert mounts["conch"]["models"]["mountPath"] == repository
    assert mounts["triton"]["models"] == {
        "name": "models",
        "mountPath": repository,
        "readOnly": True,
    }
    assert k8s.flag(triton["args"], "--model-repository") == repository
    (config,) = k8s.find(objects, "ConfigMap")
    assert config["data"]["CONCH_MODEL_REPOSITORY"] == repository
    assert config["data"]["CONCH_STATE_DIR"].startswith(mounts["conch"]["tmp"]["mountPath"])
    (claim,) = [v for v in pod["volumes"] if v["name"] == "models"]
    pvc = k8s.one(objects, "PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # The flags docker-compose.gpu.yml starts NVIDIA's Triton with, here too.
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.gpu.yml").read_text())
    compose_flags = set(compose["services"]["triton"]["command"][1:]) - {
        "--model-repository=/models"
    }
    assert compose_flags <= set(triton["args"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_named_container_ports(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    objects = rendered[overlay]
    pod = k8s.server_pod(objects)
    ports = {p["name"]: p["containerPort"] for c in k8s.containers(pod) for p in c["ports"]}
    labels = k8s.one(objects, "Deployment", "conch")["spec"]["template"]["metadata"]["labels"]
    for service in k8s.find(objects, "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports or port["targetPort"] in ports.values()
    grpc = k8s.one(objects, "Service", "conch-triton-grpc")["spec"]["ports"]
    assert [p["targetPort"] for p in grpc] == [ports["triton-grpc"]]
    for endpoint in k8s.one(rendered["monitoring"], "PodMonitor", "conch")["spec"][
        "podMetricsEndpoints"
    ]:
        assert endpoint["port"] in ports


def test_scraped_jobs_are_named_as_the_rules_and_the_dashboard_select_them(
    rendered: dict[str, tuple[Object, ...]],
) -> None:
    """The Operator would name both endpoints' job "conch/conch": every alert and
    panel selecting job="conch" or job="triton" would find nothing on Kubernetes."""
    endpoints = k8s.one(rendered["monitoring"], "PodMonitor", "conch")["spec"][
        "podMetricsEndpoints"
    ]
    jobs = {}
    for endpoint in endpoints:
        (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
        assert relabel.get("action", "replace") == "replace" and "sourceLabels" not in relabel
        jobs[endpoint["port"]] = relabel["replacement"]
    assert jobs == {"http": "conch", "triton-metrics": "triton"}
    compose = yaml.safe_load(promql.CONFIG.read_text())
    assert {c["job_name"] for c in compose["scrape_configs"]} == set(jobs.values())
    board = promql.dashboard()
    values = {v.name: "x" for v in promql.variables(board)}
    queries = [e.promql for e in promql.panel_expressions(board, values)]
    queries += [e.promql for e in promql.rule_expressions()]
    selected = {job for query in queries for job in re.findall(r'job="([^"]+)"', query)}
    assert selected == set(jobs.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_and_survive_disruptions(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    objects = rendered[overlay]
    labels = k8s.one(objects, "Deployment", "conch")["spec"]["template"]["metadata"]["labels"]
    spread = k8s.server_pod(objects)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = k8s.one(objects, "PodDisruptionBudget", "conch")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s.one(objects, "HorizontalPodAutoscaler", "conch")
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_conch_pods_may_open_redis_and_postgresql(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    policies = k8s.find(rendered[overlay], "NetworkPolicy")
    deny = k8s.one(rendered[overlay], "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    reach: dict[int, set[str]] = {6379: set(), 5432: set()}
    for policy in policies:
        component = (
            policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        )
        for rule in policy["spec"].get("egress", []):
            for port in rule.get("ports", []):
                if port["port"] in reach:
                    reach[port["port"]].add(str(component))
    assert reach == {6379: {"server"}, 5432: {"server", "migration"}}


def test_only_the_gpu_overlay_asks_for_a_gpu(rendered: dict[str, tuple[Object, ...]]) -> None:
    def gpus(overlay: str) -> dict[str, object]:
        pod = k8s.server_pod(rendered[overlay])
        return {
            c["name"]: c["resources"]["limits"].get("nvidia.com/gpu") for c in k8s.containers(pod)
        }

    assert gpus("overlays/gpu") == {"triton": 1, "conch": None}
    assert gpus("overlays/cpu") == {"triton": None, "conch": None}
    gpu_pod = k8s.server_pod(rendered["overlays/gpu"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod[
        "tolerations"
    ]
    assert "tolerations" not in k8s.server_pod(rendered["overlays/cpu"])
