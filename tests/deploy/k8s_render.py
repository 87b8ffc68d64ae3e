"""deploy/k8s rendered by `kubectl kustomize`, once per session, and the lookups the
tests share. Validation is offline, against the schemas `kubernetes-validate` ships
for one pinned Kubernetes release."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from conch_manifest.locations import PROJECT_ROOT

# The oldest release the manifests are written for: native sidecars (init containers
# with restartPolicy Always) are on by default from 1.29, container metrics in the
# HPA are stable from 1.30.
KUBERNETES_VERSION = "1.30.0"

K8S_DIR = PROJECT_ROOT / "deploy" / "k8s"
OVERLAYS = ("overlays/cpu", "overlays/gpu")
TARGETS = (*OVERLAYS, "monitoring", "datastores")
# Custom resources have no schema in Kubernetes itself (the Prometheus Operator's CRD).
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "PodMonitor")}
# What the pods read from the Secret `conch-secrets`, never from a literal.
SECRET_VARIABLES = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MODEL_EVENTS_REDIS_URL"}

Object = dict[str, Any]


@cache
def _render(target: str) -> tuple[Object, ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / target)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"kubectl kustomize {target} failed: {done.stderr}"
    return tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj)


def rendered() -> dict[str, tuple[Object, ...]]:
    """Every target's objects (skips the test without kubectl)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders deploy/k8s")
    return {target: _render(target) for target in TARGETS}


def validation_error(obj: Object) -> str | None:
    """Why `obj` does not match its schema (strict: unknown fields fail); None if it does."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        return f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}"
    return None


def find(objects: tuple[Object, ...], kind: str, name: str | None = None) -> list[Object]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: tuple[Object, ...], kind: str, name: str) -> Object:
    (found,) = find(objects, kind, name)
    return found


def pod_specs(objects: tuple[Object, ...]) -> dict[str, Object]:
    """Every pod template's spec, by its owner (`Deployment/conch`, `Job/...`)."""
    return {
        f"{obj['kind']}/{obj['metadata']['name']}": obj["spec"]["template"]["spec"]
        for obj in objects
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }


def containers(pod: Object) -> list[Object]:
    """Init containers (Triton, a native sidecar) and containers alike."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(pod: Object, name: str) -> Object:
    (found,) = [c for c in containers(pod) if c["name"] == name]
    return found


def server_pod(objects: tuple[Object, ...]) -> Object:
    spec: Object = one(objects, "Deployment", "conch")["spec"]["template"]["spec"]
    return spec


def flag(argv: list[str], name: str) -> str:
    """The value of `--name=value` in a command line."""
    (value,) = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{name}=")]
    return value


def quantity(text: str | int) -> float:
    """A Kubernetes quantity as a number: "100m" -> 0.1, "2Gi" -> 2**31."""
    value = str(text)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def load_adapter_rules(objects: tuple[Object, ...]) -> list[Object]:
    config = one(objects, "ConfigMap", "prometheus-adapter")["data"]["config.yaml"]
    rules: list[Object] = yaml.safe_load(config)["rules"]
    return rules
