"""Project predictions: weighted split, sticky users, no active slots."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass

import httpx
from scipy import stats

from control_plane.routing.selection import choose_slot
from tests.control_plane.conftest import make_project


@dataclass
class Slot:
    id: int
    weight: int
    active: bool = True


async def _project_predict(
    client: httpx.AsyncClient, project_id: int, key: str, user: str
) -> httpx.Response:
    return await client.post(
        f"/inference/predict/project/{project_id}",
        json={"user_id": user, "cutoff": 3},
        headers={"X-API-Key": key},
    )


async def test_thousand_predictions_follow_the_weights(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(
        client, admin_key, [("Control", model_ids["a"], 70), ("Variant A", model_ids["b"], 30)]
    )
    counts: Counter[str] = Counter()
    for start in range(0, 1000, 100):
        responses = await asyncio.gather(
            *(
                _project_predict(client, project.id, predict_key, f"u{i % 20}")
                for i in range(start, start + 100)
            )
        )
        for response in responses:
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["slot_id"] == project.slots[body["slot_name"]]
            counts[body["slot_name"]] += 1
    observed = [counts["Control"], counts["Variant A"]]
    # Chi-square goodness of fit against 70/30; fails by chance one run in 10,000.
    assert stats.chisquare(observed, [700, 300]).pvalue > 1e-4, observed


async def test_sticky_project_keeps_each_user_on_one_slot(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(
        client,
        admin_key,
        [("Control", model_ids["a"], 50), ("Variant A", model_ids["b"], 50)],
        sticky=True,
    )
    seen: dict[str, set[int]] = {}
    for _ in range(3):
        for user in (f"u{i}" for i in range(20)):
            response = await _project_predict(client, project.id, predict_key, user)
            assert response.status_code == 200
            seen.setdefault(user, set()).add(response.json()["slot_id"])
    assert all(len(slots) == 1 for slots in seen.values())
    assert len({next(iter(s)) for s in seen.values()}) == 2  # both slots get users


async def test_no_active_slots_is_404(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 0)])
    response = await _project_predict(client, project.id, predict_key, "u1")
    assert response.status_code == 404
    assert response.json()["message"] == "no active deployment slots"
    slot_id = project.slots["Control"]
    await client.patch(
        f"/api/v1/slots/{slot_id}", json={"weight": 10, "active": False},
        headers={"X-API-Key": admin_key},
    )  # fmt: skip
    assert (await _project_predict(client, project.id, predict_key, "u1")).status_code == 404
    await client.patch(
        f"/api/v1/slots/{slot_id}", json={"active": True}, headers={"X-API-Key": admin_key}
    )
    assert (await _project_predict(client, project.id, predict_key, "u1")).status_code == 200
    unknown_user = await _project_predict(client, project.id, predict_key, "nobody")
    assert unknown_user.status_code == 404


def test_selection_ignores_inactive_and_normalises_weights() -> None:
    slots = [Slot(1, 3), Slot(2, 1), Slot(3, 50, active=False)]
    rng = random.Random(7)
    picks = Counter(
        choose_slot(slots, user_id="x", sticky=False, salt="", rng=rng).id for _ in range(4000)
    )
    assert set(picks) == {1, 2}
    assert 0.72 < picks[1] / 4000 < 0.78
