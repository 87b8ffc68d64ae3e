"""Prometheus exposition of the control plane's counters."""

from __future__ import annotations

import httpx

from control_plane.core import metrics


def test_labelled_names_escape_values() -> None:
    assert metrics.labelled("a.b", model='x"y') == 'a.b{model="x\\"y"}'


def test_families_stand_together_with_one_type_line() -> None:
    metrics.increment("test.family_x")
    metrics.increment(metrics.labelled("test.family", kind="one"), 2)
    metrics.increment(metrics.labelled("test.family", kind="two"))
    lines = metrics.prometheus_text().splitlines()
    start = lines.index("# TYPE conch_test_family_total counter")
    assert lines[start + 1 : start + 3] == [
        'conch_test_family_total{kind="one"} 2',
        'conch_test_family_total{kind="two"} 1',
    ]
    assert lines.count("# TYPE conch_test_family_total counter") == 1


async def test_metrics_endpoint_counts_responses_by_status(client: httpx.AsyncClient) -> None:
    await client.get("/inference/no-such-route")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'conch_http_responses_total{status="404"}' in response.text
