"""The HPA's Triton metric, held against a live embedded Triton (the release the
sidecar pins): the series the Prometheus Adapter rule reads exist under those names,
and, where Debian's `prometheus` is installed, the rule's query returns a value."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from conch_embedded.process import free_port
from conch_embedded.triton_server import EmbeddedTriton
from tests.control_plane.recommender_model import write_recommender
from tests.deploy import k8s_render as k8s
from tests.deploy.k8s_render import Object

MODEL = "k8s_metrics_rec"
DEADLINE_S = 60.0  # guards against a hang only; every wait ends when its condition holds


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Object, ...]]:
    return k8s.rendered()


@pytest.fixture(scope="module")
def live_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTriton]:
    """Its own Triton: no control plane's reconciler may unload the model meanwhile."""
    repository = tmp_path_factory.mktemp("k8s_repository")
    write_recommender(repository, MODEL, seed=1)
    with EmbeddedTriton.on_free_ports(repository, load_models=[MODEL]) as server:
        yield server


def _infer(server: EmbeddedTriton, count: int) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    users = grpcclient.InferInput("USER_INDEX", [1, 1], "INT64")
    users.set_data_from_numpy(np.array([[0]], dtype=np.int64))
    for _ in range(count):
        client.infer(MODEL, [users])
    client.close()


def _series(metrics_url: str) -> dict[str, float]:
    """`name{labels}` -> value of every sample Triton exports."""
    lines = httpx.get(metrics_url).text.splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


def _hpa_pod_metrics(objects: tuple[Object, ...]) -> set[str]:
    hpa = k8s.one(objects, "HorizontalPodAutoscaler", "conch")
    return {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}


def test_triton_answers_the_sidecar_probes_and_is_the_pinned_release(
    rendered: dict[str, tuple[Object, ...]], live_triton: EmbeddedTriton
) -> None:
    triton = k8s.container(k8s.server_pod(rendered["overlays/gpu"]), "triton")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = triton[probe]["httpGet"]["path"]
        assert httpx.get(f"http://{live_triton.http_url}{path}").status_code == 200, path
    # NGC's YY.MM is Triton 2.N, one minor release a month: 24.02 was 2.43.0.
    tag = re.fullmatch(r".*:(\d\d)\.(\d\d)-py3", triton["image"])
    assert tag is not None, triton["image"]
    year, month = tag.groups()
    minor = 43 + (int(year) - 24) * 12 + (int(month) - 2)
    assert httpx.get(f"http://{live_triton.http_url}/v2").json()["version"] == f"2.{minor}.0"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_hpa_scales_on_what_the_adapter_rule_derives_from_tritons_series(
    rendered: dict[str, tuple[Object, ...]], live_triton: EmbeddedTriton, overlay: str
) -> None:
    rules = k8s.load_adapter_rules(rendered["monitoring"])
    provided = {rule["name"]["as"] for rule in rules}
    assert _hpa_pod_metrics(rendered[overlay]) <= provided
    _infer(live_triton, 3)
    exported = {name.split("{", 1)[0] for name in _series(live_triton.metrics_url)}
    for rule in rules:
        read = set(re.findall(r"\bnv_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
        assert read and read <= exported, read - exported
        assert re.fullmatch(rule["name"]["matches"].strip("^$"), rule["seriesQuery"].split("{")[0])
        # The adapter maps these labels to pods: Prometheus must attach them (PodMonitor).
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    success = _series(live_triton.metrics_url)[
        f'nv_inference_request_success{{model="{MODEL}",version="1"}}'
    ]
    assert success >= 3


def _adapter_query(rule: Object, namespace: str, pod: str) -> str:
    """The PromQL the adapter sends for one pod (its template filled in as it fills it)."""
    matchers = f'namespace="{namespace}",pod=~"{pod}"'
    query: str = rule["metricsQuery"]
    return query.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")


@pytest.fixture(scope="module")
def prometheus(
    live_triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Debian's Prometheus scraping the live Triton as the PodMonitor would, with the
    pod's namespace and name as labels."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    workdir = tmp_path_factory.mktemp("prometheus")
    target = live_triton.metrics_url.split("//", 1)[1].split("/", 1)[0]
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "triton",
                "static_configs": [
                    {"targets": [target], "labels": {"namespace": "conch", "pod": "conch-0"}}
                ],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with (workdir / "prometheus.log").open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(f"{url}/-/ready"), "prometheus did not become ready", workdir)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Callable[[], bool], what: str, workdir: Path | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        log = (workdir / "prometheus.log").read_text() if workdir else ""
        assert time.monotonic() < deadline, f"{what}\n{log}"
        time.sleep(0.1)


def test_the_adapter_query_returns_queue_time_per_request_for_the_pod(
    rendered: dict[str, tuple[Object, ...]], live_triton: EmbeddedTriton, prometheus: str
) -> None:
    (rule,) = k8s.load_adapter_rules(rendered["monitoring"])
    query = _adapter_query(rule, "conch", "conch-0")
    found: list[Object] = []

    def answered() -> bool:
        _infer(live_triton, 5)  # requests between scrapes: a rate above zero
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query})
        assert response.status_code == 200, response.text  # 400: the PromQL is invalid
        found[:] = response.json()["data"]["result"]
        return bool(found)

    _wait(answered, f"no series for {query}")
    (sample,) = found
    assert sample["metric"] == {"pod": "conch-0"}
    microseconds = float(sample["value"][1])
    assert math.isfinite(microseconds) and 0 <= microseconds < 1e6
