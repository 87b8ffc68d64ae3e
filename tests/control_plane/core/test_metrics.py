"""The machinery of `core/metrics.py`: names, children, this process's values."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from control_plane.core import metrics


def test_labelled_names_escape_values() -> None:
    assert metrics.labelled("a.b", model='x"y') == 'a.b{model="x\\"y"}'


def test_counters_keep_their_dotted_names_in_the_engines_snapshot() -> None:
    before = metrics.snapshot("events.")
    metrics.EVENTS_RECEIVED.labels("slot_changed").inc()
    metrics.EVENTS_MALFORMED.inc(2)
    after = metrics.snapshot("events.")
    key = 'events.received{type="slot_changed"}'
    assert after[key] - before.get(key, 0) == 1
    assert after["events.malformed"] - before["events.malformed"] == 2
    assert not any(name.startswith("lifecycle.") for name in after)


def test_value_reads_one_child() -> None:
    before = metrics.value(metrics.LIFECYCLE_MODEL_LOADS, model="m1")
    metrics.LIFECYCLE_MODEL_LOADS.labels("m1").inc()
    metrics.LIFECYCLE_MODEL_LOADS.labels("m2").inc()
    assert metrics.value(metrics.LIFECYCLE_MODEL_LOADS, model="m1") - before == 1
    assert metrics.value(metrics.LIFECYCLE_MODEL_LOADS, model="never") == 0


def test_children_are_bound_once() -> None:
    children = metrics.Children(metrics.TRITON_REQUEST_SECONDS)
    first = children.get(("m", True), "m", "ok")
    assert children.get(("m", True), "never", "read") is first
    assert children.get(("m", False), "m", "error") is not first


def test_exposition_parses_with_one_family_per_name() -> None:
    metrics.observe_triton_call("parse-check", True, 0.002)
    families = list(text_string_to_metric_families(metrics.exposition().decode()))
    names = [family.name for family in families]
    assert len(names) == len(set(names))
    triton = next(f for f in families if f.name == "conch_triton_request_duration_seconds")
    assert triton.type == "histogram"
    counts = [
        s
        for s in triton.samples
        if s.name.endswith("_count") and s.labels["model"] == "parse-check"
    ]
    assert counts and counts[0].value >= 1
    # No `_created` series beside the counters.
    assert not any(s.name.endswith("_created") for f in families for s in f.samples)
