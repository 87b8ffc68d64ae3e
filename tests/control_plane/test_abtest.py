"""Conversion events (deduplicated), A/B statistics and promotion."""

from __future__ import annotations

import math
import uuid

import httpx
import pytest
from fastapi import FastAPI
from scipy import stats as scipy_stats

from control_plane.abtest.stats import two_proportion_z_test
from tests.control_plane.conftest import ProjectSetup, make_key, make_project


def test_z_test_matches_reference() -> None:
    # Reference: pooled two-proportion z statistic, normal two-sided p (scipy),
    # Wald interval of the difference, all computed independently here.
    x1, n1, x2, n2 = 130, 1000, 100, 1000
    p1, p2, pooled = x1 / n1, x2 / n2, (x1 + x2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = 2 * scipy_stats.norm.sf(abs(z))
    half = scipy_stats.norm.ppf(0.975) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    result = two_proportion_z_test(x1, n1, x2, n2)
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.ci_low == pytest.approx(p1 - p2 - half, rel=1e-9)
    assert result.ci_high == pytest.approx(p1 - p2 + half, rel=1e-9)
    # By hand: pooled 0.115, se sqrt(0.115 * 0.885 * 0.002) = 0.014267, z = 0.03 / se.
    assert z == pytest.approx(2.1027, abs=1e-4)
    assert two_proportion_z_test(0, 0, 1, 10).p_value is None


def _event(
    project: ProjectSetup, slot: str, user: str, kind: str, request_id: str
) -> dict[str, object]:
    return {
        "project": project.id,
        "deployment_slot": project.slots[slot],
        "user_id": user,
        "item_id": "i1",
        "event_type": kind,
        "recommendation_request_id": request_id,
    }


async def test_duplicate_event_is_counted_once(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 100)])
    event = _event(project, "Control", "u1", "click", str(uuid.uuid4()))
    headers = {"X-API-Key": predict_key}
    first = await client.post("/api/v1/conversion_event/", json=event, headers=headers)
    assert first.status_code == 201 and first.json()["created"] == 1
    again = await client.post("/api/v1/conversion_event/", json=event, headers=headers)
    assert again.json() == {"received": 1, "created": 0, "duplicates": 1}
    batch = await client.post(
        "/api/v1/conversion_event/batch/", json=[event, event], headers=headers
    )
    assert batch.status_code == 201 and batch.json()["created"] == 0
    results = await client.get(
        f"/api/v1/projects/{project.id}/ab_results", headers={"X-API-Key": admin_key}
    )
    assert results.json()["slots"][0]["clicks"] == 1


async def test_event_rules(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_ids: dict[str, int],
) -> None:
    mine = await make_project(client, admin_key, [("Control", model_ids["a"], 100)])
    other = await make_project(client, admin_key, [("Control", model_ids["a"], 100)])
    wrong_slot = {
        **_event(mine, "Control", "u1", "click", "r1"),
        "deployment_slot": other.slots["Control"],
    }
    response = await client.post(
        "/api/v1/conversion_event/", json=wrong_slot, headers={"X-API-Key": predict_key}
    )
    assert response.status_code == 400 and response.json()["error"] == "BadRequestError"
    bad_type = {**_event(mine, "Control", "u1", "view", "r1")}
    response = await client.post(
        "/api/v1/conversion_event/", json=bad_type, headers={"X-API-Key": predict_key}
    )
    assert response.status_code == 422
    bound = await make_key(app, ["predict"], project_id=mine.id)
    response = await client.post(
        "/api/v1/conversion_event/", json=_event(other, "Control", "u1", "click", "r1"),
        headers={"X-API-Key": bound},
    )  # fmt: skip
    assert response.status_code == 404  # another project looks like no project to it


async def test_ab_results_and_promote(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(
        client, admin_key, [("Control", model_ids["a"], 50), ("Variant A", model_ids["b"], 50)]
    )
    events = []
    for slot, clicks in (("Control", 100), ("Variant A", 160)):
        for i in range(1000):
            request_id = f"{slot}-{i}"
            events.append(_event(project, slot, f"u{i}", "impression", request_id))
            if i < clicks:
                events.append(_event(project, slot, f"u{i}", "click", request_id))
            if i < clicks // 4:
                events.append(_event(project, slot, f"u{i}", "purchase", request_id))
    headers = {"X-API-Key": predict_key}
    for start in range(0, len(events), 1000):
        response = await client.post(
            "/api/v1/conversion_event/batch/", json=events[start : start + 1000], headers=headers
        )
        assert response.status_code == 201, response.text
    admin = {"X-API-Key": admin_key}
    body = (await client.get(f"/api/v1/projects/{project.id}/ab_results", headers=admin)).json()
    control, variant = body["slots"]
    assert control["is_control"] and body["control_slot_id"] == project.slots["Control"]
    assert (control["impressions"], control["clicks"], control["purchases"]) == (1000, 100, 25)
    assert variant["ctr"] == pytest.approx(0.16) and variant["conversion_rate"] == 0.04
    comparison = variant["ctr_vs_control"]
    reference = two_proportion_z_test(160, 1000, 100, 1000)
    assert comparison["p_value"] == pytest.approx(reference.p_value)
    assert comparison["lift"] == pytest.approx(0.6) and comparison["significant"]
    assert variant["sufficient_sample"] and body["winner_slot_id"] == project.slots["Variant A"]

    promoted = await client.post(f"/api/v1/projects/{project.id}/promote", headers=admin)
    assert promoted.status_code == 200, promoted.text
    by_name = {s["name"]: s for s in promoted.json()}
    assert by_name["Variant A"]["weight"] == 100 and by_name["Variant A"]["active"]
    assert not by_name["Control"]["active"]
    for _ in range(5):
        response = await client.post(
            f"/inference/predict/project/{project.id}", json={"user_id": "u3"}, headers=headers
        )
        assert response.json()["slot_name"] == "Variant A"


async def test_promote_without_winner_is_409(
    client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(
        client, admin_key, [("Control", model_ids["a"], 50), ("Variant A", model_ids["b"], 50)]
    )
    admin = {"X-API-Key": admin_key}
    response = await client.post(f"/api/v1/projects/{project.id}/promote", headers=admin)
    assert response.status_code == 409
    response = await client.post(
        f"/api/v1/projects/{project.id}/promote", json={"slot_id": project.slots["Control"]},
        headers=admin,
    )  # fmt: skip
    assert response.status_code == 200
