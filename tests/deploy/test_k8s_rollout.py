"""deploy/k8s, the order of a rollout: the migration Job before the pods, staged by
labels (docs/DEPLOY.md), and pods that drain before their Triton stops."""

from __future__ import annotations

import pytest
import typer

from control_plane.cli import app as conch_cli
from control_plane.core.settings import Settings
from tests.deploy import k8s_render as k8s
from tests.deploy.k8s_render import OVERLAYS, Object


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Object, ...]]:
    return k8s.rendered()


def _labelled(objects: tuple[Object, ...], key: str, value: str) -> set[str]:
    return {
        f"{o['kind']}/{o['metadata']['name']}"
        for o in objects
        if o["metadata"].get("labels", {}).get(key) == value
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_staged_apply_brings_up_what_the_migration_needs_first(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    objects = rendered[overlay]
    (config,) = k8s.find(objects, "ConfigMap")
    prepare = _labelled(objects, "conch.dev/stage", "prepare")
    assert prepare == {
        "Namespace/conch",
        f"ConfigMap/{config['metadata']['name']}",
        "NetworkPolicy/default-deny",
    }
    migration = _labelled(objects, "app.kubernetes.io/component", "migration")
    assert migration == {
        "ServiceAccount/conch-migrate",
        "NetworkPolicy/conch-migrate",
        "Job/conch-migrate",
    }
    # Everything the Job's pod names is in those two steps (the Secret is the operator's).
    pod = k8s.one(objects, "Job", "conch-migrate")["spec"]["template"]["spec"]
    (migrate,) = pod["containers"]
    needs = {f"ServiceAccount/{pod['serviceAccountName']}"} | {
        f"ConfigMap/{source['configMapRef']['name']}" for source in migrate["envFrom"]
    }
    assert needs <= prepare | migration
    assert {v["valueFrom"]["secretKeyRef"]["name"] for v in migrate["env"]} == {"conch-secrets"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rolling_updates_drain_before_anything_stops(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    deployment = k8s.one(rendered[overlay], "Deployment", "conch")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pod = k8s.server_pod(rendered[overlay])
    conch, triton = k8s.container(pod, "conch"), k8s.container(pod, "triton")
    sleep = conch["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    # Triton is a native sidecar: it stops only after the control plane has exited.
    assert triton["restartPolicy"] == "Always" and triton in pod["initContainers"]
    drain_s = int(sleep[1]) + Settings.model_fields["triton_timeout_s"].default
    triton_exit_s = int(k8s.flag(triton["args"], "--exit-timeout-secs"))
    assert pod["terminationGracePeriodSeconds"] > drain_s + triton_exit_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_runs_conchs_own_upgrade_command(
    rendered: dict[str, tuple[Object, ...]], overlay: str
) -> None:
    job = k8s.one(rendered[overlay], "Job", "conch-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["conch", "db", "upgrade"]
    cli = typer.main.get_command(conch_cli)
    assert "upgrade" in cli.commands["db"].commands  # type: ignore[attr-defined]
    assert migrate["image"] == k8s.container(k8s.server_pod(rendered[overlay]), "conch")["image"]
