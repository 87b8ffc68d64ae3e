"""deploy/prometheus/ and deploy/grafana/ against the real Prometheus (Debian's
package) scraping a live control plane and its embedded Triton: promtool accepts
the rules, and every PromQL expression of the dashboard and of the rules (an
alert's measured quantity, its threshold removed) returns at least one series
once traffic exercised every signal. The expressions are read from the files
(tests/deploy/promql.py): a new panel or rule is checked without editing this."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.app import create_app
from tests.control_plane.conftest import make_key, make_project, stack_settings
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.served import served
from tests.control_plane.waiting import until_served
from tests.deploy import prometheus_server as server
from tests.deploy import promql

MODELS = {"a": "promrules_rec_a", "b": "promrules_rec_b"}
PREDICT_ROUTE = "/inference/predict/{model_id}"
# The value each dashboard variable takes here (it must be one Prometheus has).
CHOSEN = {"model": MODELS["a"], "route": PREDICT_ROUTE}


def _needs(name: str) -> str:
    path = server.binary(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus)")
    return path


def test_promtool_accepts_the_rules_and_the_compose_config() -> None:
    promtool = _needs("promtool")
    for command in (["check", "rules", promql.RULES], ["check", "config", promql.CONFIG]):
        done = subprocess.run([promtool, *map(str, command)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Live:
    conch: httpx.AsyncClient  # the control plane, over a real port
    keys: dict[str, str]
    model_ids: dict[str, int]
    project_id: int
    metrics_target: str


@pytest.fixture(scope="module")
async def live(
    database_url: str, redis_url: str, triton: EmbeddedTriton, model_repository: Path
) -> AsyncIterator[Live]:
    for seed, name in enumerate(MODELS.values(), start=1):
        write_recommender(model_repository, name, seed)
    app = create_app(stack_settings(database_url, redis_url, triton, model_repository))
    async with (
        app.router.lifespan_context(app),
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as conch,
    ):
        keys = {
            "admin": await make_key(app, ["admin"]),
            "predict": await make_key(app, ["predict"]),
            "limited": await make_key(app, ["predict"], rate_limit="1/minute"),
        }
        ids = {}
        for label, name in MODELS.items():
            response = await conch.post(
                "/api/v1/models", json={"triton_name": name}, headers=_key(keys["admin"])
            )
            assert response.status_code == 201, response.text
            ids[label] = response.json()["id"]
            await until_served(conch, ids[label], keys["predict"])
        slots = [("control", ids["a"], 50), ("treatment", ids["b"], 50)]
        project = await make_project(conch, keys["admin"], slots)
        yield Live(conch, keys, ids, project.id, url.removeprefix("http://"))


def _key(token: str) -> dict[str, str]:
    return {"X-API-Key": token}


async def _traffic(live: Live) -> None:
    """Every signal the dashboard and the rules read: predictions, A/B selections, a
    4xx and a rate-limit refusal."""
    conch, keys = live.conch, live.keys
    for model_id in live.model_ids.values():
        for _ in range(3):
            response = await conch.post(
                f"/inference/predict/{model_id}",
                json={"user_id": "u1"},
                headers=_key(keys["predict"]),
            )
            assert response.status_code == 200, response.text
    chosen = set()
    for _ in range(12):  # not sticky: each request draws a slot by weight
        response = await conch.post(
            f"/inference/predict/project/{live.project_id}",
            json={"user_id": "u1"},
            headers=_key(keys["predict"]),
        )
        assert response.status_code == 200, response.text
        chosen.add(response.json()["slot_name"])
    assert chosen  # at least one slot counted (both, almost surely)
    unknown = await conch.post(
        "/inference/predict/987654321", json={"user_id": "u1"}, headers=_key(keys["predict"])
    )
    assert unknown.status_code == 404, unknown.text
    limited = f"/inference/predict/{live.model_ids['a']}"
    statuses = [
        (
            await conch.post(limited, json={"user_id": "u1"}, headers=_key(keys["limited"]))
        ).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 429]


async def _api(prometheus: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await prometheus.get(f"/api/v1/{path}", params=params)
    assert response.status_code == 200, f"{path} {params}: {response.text}"  # 400: bad PromQL
    return response.json()["data"]


async def _scraped_after(prometheus: httpx.AsyncClient, log: Path, since: float) -> None:
    """Until each target was scraped twice after `since` (a rate over a series that
    appeared needs two samples), then until every rule group evaluated after that."""

    async def scraped() -> bool:
        now = time.time()
        window = f"{max(1, int((now - since) * 1000))}ms"  # samples stamped after `since`
        query = f"min by (job) (count_over_time(up[{window}]))"
        found = await _api(prometheus, "query", query=query, time=f"{now:.3f}")
        counts = {s["metric"]["job"]: float(s["value"][1]) for s in found["result"]}
        return counts.keys() == {"conch", "triton"} and min(counts.values()) >= 2

    await server.until(scraped, "Prometheus did not scrape both targets after the traffic", log)
    scraped_at = time.time()

    async def evaluated() -> bool:
        groups = (await _api(prometheus, "rules"))["groups"]
        for group in groups:
            for rule in group["rules"]:
                assert rule["health"] != "err", f"{rule['name']}: {rule.get('lastError')}"
        return len(groups) == 2 and all(
            server.timestamp(group["lastEvaluation"]) > scraped_at for group in groups
        )

    await server.until(evaluated, "the rules were not evaluated after the scrapes", log)


async def _values(prometheus: httpx.AsyncClient, variable: promql.Variable) -> set[str]:
    query = f"group by ({variable.label}) ({variable.metric})"
    found = await _api(prometheus, "query", query=query)
    return {series["metric"].get(variable.label, "") for series in found["result"]}


async def test_every_dashboard_and_rule_expression_returns_a_series(
    live: Live, triton: EmbeddedTriton, tmp_path: Path
) -> None:
    executable = _needs("prometheus")
    config = yaml.safe_load(promql.CONFIG.read_text())
    triton_target = triton.metrics_url.split("//", 1)[1].split("/", 1)[0]
    targets = {"conch": live.metrics_target, "triton": triton_target}
    local = server.local_config(config, targets, promql.RULES)
    async with server.prometheus(executable, local, tmp_path) as (prometheus, log):
        await _traffic(live)
        await _scraped_after(prometheus, log, time.time())

        board = promql.dashboard()
        for variable in promql.variables(board):
            assert variable.name in CHOSEN, f"choose a value for ${variable.name} in CHOSEN"
            values = await _values(prometheus, variable)
            assert CHOSEN[variable.name] in values, (variable, values)
        expressions = promql.panel_expressions(board, CHOSEN) + promql.rule_expressions()
        empty = []
        for expression in expressions:
            data = await _api(prometheus, "query", query=expression.promql)
            if not data["result"]:
                empty.append(f"{expression.where}: {expression.promql}")
        assert not empty, "no series for:\n" + "\n".join(empty)
        assert len(expressions) >= 40  # every panel's queries and every rule were read
