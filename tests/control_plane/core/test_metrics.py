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


_NOT_FOUND_SAMPLE = 'conch_http_responses_total{status="404"}'


def _sample(exposition: str, sample: str) -> int:
    """A counter's value in Prometheus' text format; 0 while it has never counted."""
    for line in exposition.splitlines():
        name, _, count = line.rpartition(" ")
        if name == sample:
            return int(count)
    return 0


async def _scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_metrics_endpoint_counts_responses_by_status(client: httpx.AsyncClient) -> None:
    # Counters are per process and earlier tests have counted 404s too: the
    # difference this test's own request makes is what it checks.
    before = _sample(await _scrape(client), _NOT_FOUND_SAMPLE)
    missing = await client.get("/inference/no-such-route")
    assert missing.status_code == 404
    after = _sample(await _scrape(client), _NOT_FOUND_SAMPLE)
    assert after - before == 1
