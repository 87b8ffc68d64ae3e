"""A/B results through the API: impossible counts, empty slots, sample gates, Holm."""

from __future__ import annotations

import httpx
import pytest

from control_plane.abtest import stats
from tests.control_plane.conftest import ProjectSetup, make_project


def _event(project: ProjectSetup, slot: str, kind: str, request_id: str) -> dict[str, object]:
    return {
        "project": project.id,
        "deployment_slot": project.slots[slot],
        "user_id": f"user-{request_id}",
        "item_id": f"item-{kind}",
        "event_type": kind,
        "recommendation_request_id": request_id,
    }


def _slot_events(
    project: ProjectSetup, slot: str, impressions: int, clicks: int, purchases: int = 0
) -> list[dict[str, object]]:
    """`impressions` requests; the first `clicks` of them clicked, the first `purchases` bought."""
    events = []
    for i in range(impressions):
        request_id = f"{slot}-{i}"
        events.append(_event(project, slot, "impression", request_id))
        if i < clicks:
            events.append(_event(project, slot, "click", request_id))
        if i < purchases:
            events.append(_event(project, slot, "purchase", request_id))
    return events


async def _post_batches(
    client: httpx.AsyncClient, key: str, events: list[dict[str, object]]
) -> None:
    for start in range(0, len(events), 1000):
        response = await client.post(
            "/api/v1/conversion_event/batch/",
            json=events[start : start + 1000],
            headers={"X-API-Key": key},
        )
        assert response.status_code == 201, response.text


async def test_more_clicks_than_impressions_is_flagged_not_a_500(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(
        client, admin_key, [("Control", model_ids["a"], 50), ("Variant", model_ids["b"], 50)]
    )
    # Any predict key can do this: one impression, then three clicks on other requests
    # (the clicks carry request ids whose impressions were never sent).
    events = [_event(project, "Control", "impression", "c-1")]
    events += [_event(project, "Variant", "impression", "v-1")]
    events += [_event(project, "Variant", "click", f"v-{i}") for i in range(1, 4)]
    for event in events:
        response = await client.post(
            "/api/v1/conversion_event/", json=event, headers={"X-API-Key": predict_key}
        )
        assert response.status_code == 201, response.text

    admin = {"X-API-Key": admin_key}
    response = await client.get(f"/api/v1/projects/{project.id}/ab_results", headers=admin)
    assert response.status_code == 200, response.text
    control, variant = response.json()["slots"]
    assert control["counts_valid"] and control["invalid_reason"] is None
    assert control["ctr"] == 0.0
    assert (variant["impressions"], variant["clicks"]) == (1, 3)
    assert not variant["counts_valid"]
    assert variant["invalid_reason"] == "clicks (3) exceed impressions (1)"
    assert variant["ctr"] is None and variant["conversion_rate"] is None
    comparison = variant["ctr_vs_control"]
    assert not comparison["tested"] and not comparison["significant"]
    assert comparison["not_tested_reason"] == "this slot's counts are invalid"
    assert comparison["p_value"] is None and comparison["always_valid_p_value"] is None
    assert response.json()["winner_slot_id"] is None

    # promote with no slot_id reads the same results: no winner, a clear 409.
    response = await client.post(f"/api/v1/projects/{project.id}/promote", headers=admin)
    assert response.status_code == 409, response.text


async def test_empty_slot_has_null_rates_and_small_samples_are_not_tested(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(
        client,
        admin_key,
        [
            ("Control", model_ids["a"], 40),
            ("Small", model_ids["b"], 30),
            ("Empty", model_ids["b"], 30),
        ],
    )
    await _post_batches(
        client,
        predict_key,
        _slot_events(project, "Control", 200, 20) + _slot_events(project, "Small", 50, 40),
    )
    response = await client.get(
        f"/api/v1/projects/{project.id}/ab_results",
        params={"min_impressions": 100},
        headers={"X-API-Key": admin_key},
    )
    assert response.status_code == 200, response.text
    _, small, empty = response.json()["slots"]
    assert empty["impressions"] == 0 and empty["counts_valid"]
    assert empty["ctr"] is None and empty["conversion_rate"] is None
    assert empty["ctr_vs_control"]["difference"] is None
    assert empty["ctr_vs_control"]["not_tested_reason"] == (
        "this slot has 0 impressions, fewer than min_impressions (100)"
    )
    # 40/50 against 20/200 is a huge effect, but 50 impressions are below the gate:
    # described (difference, lift), never tested, never a winner.
    comparison = small["ctr_vs_control"]
    assert comparison["difference"] == pytest.approx(0.7) and comparison["lift"] == pytest.approx(7)
    assert not comparison["tested"] and comparison["z"] is None and comparison["p_value"] is None
    assert not comparison["significant"] and not comparison["always_valid_significant"]
    assert response.json()["winner_slot_id"] is None


async def test_two_variants_get_holm_adjusted_p_values_and_an_always_valid_winner(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(
        client,
        admin_key,
        [
            ("Control", model_ids["a"], 34),
            ("Better", model_ids["b"], 33),
            ("Same", model_ids["b"], 33),
        ],
    )
    await _post_batches(
        client,
        predict_key,
        _slot_events(project, "Control", 1000, 100, 10)
        + _slot_events(project, "Better", 1000, 170, 12)
        + _slot_events(project, "Same", 1000, 112, 11),
    )
    response = await client.get(
        f"/api/v1/projects/{project.id}/ab_results", headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    _, better, same = body["slots"]
    raw_better = stats.two_proportion_z_test(170, 1000, 100, 1000).p_value
    raw_same = stats.two_proportion_z_test(112, 1000, 100, 1000).p_value
    assert raw_better is not None and raw_same is not None
    # Holm with two hypotheses: the smaller p doubled, the larger kept (never below it).
    assert better["ctr_vs_control"]["p_value"] == pytest.approx(raw_better)
    assert better["ctr_vs_control"]["p_value_adjusted"] == pytest.approx(2 * raw_better)
    assert same["ctr_vs_control"]["p_value_adjusted"] == pytest.approx(raw_same)
    assert better["ctr_vs_control"]["significant"] and not same["ctr_vs_control"]["significant"]
    sequential = better["ctr_vs_control"]
    assert sequential["always_valid_p_value"] > sequential["p_value"]  # the price of peeking
    assert sequential["always_valid_p_value_adjusted"] < 0.05
    assert sequential["always_valid_significant"]
    low, high = sequential["confidence_sequence"]
    ci_low, ci_high = sequential["ci_95"]
    assert low < ci_low < 0.07 < ci_high < high  # wider than the fixed-horizon interval
    assert body["winner_slot_id"] == project.slots["Better"]
