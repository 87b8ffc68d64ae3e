"""Console fixtures: a project with two slots and posted A/B events, signed-in clients."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from tests.control_plane.conftest import ProjectSetup, make_project

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def post_events(
    client: httpx.AsyncClient,
    predict_key: str,
    setup: ProjectSetup,
    slot: str,
    impressions: int,
    clicks: int,
    purchases: int = 0,
) -> None:
    """As a client reports them: an impression per request, then its click/purchase."""
    events = []
    for n in range(impressions):
        request_id = uuid.uuid4().hex
        kinds = ["impression"]
        kinds += ["click"] if n < clicks else []
        kinds += ["purchase"] if n < purchases else []
        events += [
            {
                "project": setup.id,
                "deployment_slot": setup.slots[slot],
                "user_id": f"u{n}",
                "item_id": "i1",
                "event_type": kind,
                "recommendation_request_id": request_id,
            }
            for kind in kinds
        ]
    for start in range(0, len(events), 1000):
        response = await client.post(
            "/api/v1/conversion_event/batch/",
            json=events[start : start + 1000],
            headers={"X-API-Key": predict_key},
        )
        assert response.status_code == 201, response.text


async def ab_project(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> ProjectSetup:
    """Control A (10% CTR) and B (20% CTR) with 1,000 impressions each: B wins."""
    setup = await make_project(
        client, admin_key, [("A", model_ids["a"], 50), ("B", model_ids["b"], 50)]
    )
    await post_events(client, predict_key, setup, "A", 1000, 100, 20)
    await post_events(client, predict_key, setup, "B", 1000, 200, 50)
    return setup


@pytest.fixture(scope="module")
async def project(
    client: httpx.AsyncClient, admin_key: str, predict_key: str, model_ids: dict[str, int]
) -> ProjectSetup:
    return await ab_project(client, admin_key, predict_key, model_ids)


@dataclass
class Console:
    """A browser-like client signed in to the console (its own cookie jar)."""

    http: httpx.AsyncClient
    csrf: str

    async def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post(path, data={"csrf_token": self.csrf, **(data or {})})


async def sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await http.get("/console/sign-in")
    assert form.status_code == 200, form.text
    return await http.post(
        "/console/sign-in", data={"csrf_token": csrf_of(form.text), "api_key": key}
    )


SignedIn = Callable[..., AbstractAsyncContextManager[Console]]


@pytest.fixture
def signed_in(app: FastAPI) -> SignedIn:
    @asynccontextmanager
    async def open_console(key: str, *, scheme: str = "http") -> AsyncIterator[Console]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://conch") as http:
            response = await sign_in(http, key)
            assert response.status_code == 303, response.text
            page = await http.get("/console/projects")
            assert page.status_code == 200, page.text
            yield Console(http, csrf_of(page.text))

    return open_console
