"""The console in a real browser: Debian's Chromium driven by Playwright (no download).

Against the app served by uvicorn on a real port: sign in, read two slots and
their intervals, promote the winner through its confirmation, see the weights
change, sign out; a POST without the CSRF token is refused. Screenshots of the
main pages go to `CONCH_CONSOLE_SCREENSHOTS` when set (`docs/console/` in the
README), else to the test's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.control_plane.conftest import ProjectSetup, make_key, state_of
from tests.control_plane.console.conftest import ab_project
from tests.control_plane.served import served

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)",
)
playwright = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package (the dev extra)"
)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    wanted = os.environ.get("CONCH_CONSOLE_SCREENSHOTS")
    path = Path(wanted) if wanted else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _spread_over_a_week(app: FastAPI, setup: ProjectSetup) -> None:
    """As if the events had come in over seven days: the trend has days to draw."""
    async with state_of(app).sessionmaker() as session, session.begin():
        if session.get_bind().dialect.name == "sqlite":  # text: keep the fraction as written
            moved = "datetime(created_at, '-' || (id % 7) || ' days') || substr(created_at, 20)"
        else:
            moved = "created_at - (id % 7) * interval '1 day'"
        await session.execute(
            text(f"UPDATE conversion_events SET created_at = {moved} WHERE project_id = :p"),
            {"p": setup.id},
        )


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright.async_playwright() as driver:
        # Chromium's sandbox refuses root (CI runs as root); elsewhere it stays on.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = await driver.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield launched
        finally:
            await launched.close()


async def test_sign_in_read_promote_and_sign_out_in_chromium(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_ids: dict[str, int],
    browser: Any,
    screenshots: Path,
) -> None:
    setup = await ab_project(client, admin_key, predict_key, model_ids)
    await _spread_over_a_week(app, setup)
    key = await make_key(app, ["admin"], name="console-demo")
    async with served(app) as url:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await page.goto(f"{url}/console/")
        assert page.url.endswith("/console/sign-in")
        await page.fill("#api_key", key)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/console/projects")
        await page.screenshot(path=screenshots / "projects.png", full_page=True)

        await page.click(f"a[href='/console/projects/{setup.id}']")
        await page.wait_for_url(f"**/console/projects/{setup.id}")
        rows = page.locator("section.card:has(h2:text('Slots')) tbody tr")
        assert await rows.count() == 2
        ctr_chart = page.locator("svg[aria-labelledby='ctr-title ctr-desc']")
        described = await ctr_chart.locator("desc").text_content()
        assert described is not None
        assert "A (control): 10.0% (95% CI 8.3%\u201312.0%)" in described
        assert "B (winner): 20.0% (95% CI 17.6%\u201322.6%)" in described
        await page.screenshot(path=screenshots / "ab-results.png", full_page=True)

        # No CSRF token: refused, and nothing changes.
        refused = await page.request.post(
            f"{url}/console/projects/{setup.id}/promote",
            form={"slot_id": str(setup.slots["B"])},
        )
        assert refused.status == 403

        await page.click("a.button:text('Promote B')")
        await page.wait_for_url("**/promote?slot_id=*")
        await page.screenshot(path=screenshots / "promote-confirmation.png", full_page=True)
        await page.click("button:text('Yes, promote B')")
        await page.wait_for_url(f"**/console/projects/{setup.id}?promoted=*")
        assert "Promoted B" in (await page.locator("p.notice").text_content() or "")
        weights = await rows.locator("td:nth-child(3)").all_text_contents()
        assert [w.split()[0] for w in weights] == ["50", "100"]

        await page.goto(f"{url}/console/models")
        await page.screenshot(path=screenshots / "models.png", full_page=True)
        await page.goto(f"{url}/console/keys")
        await page.screenshot(path=screenshots / "keys.png", full_page=True)

        await page.click("header form.who button")
        await page.wait_for_url("**/console/sign-in")
        await page.goto(f"{url}/console/projects")
        assert page.url.endswith("/console/sign-in")
        await context.close()
    slots = await client.get(f"/api/v1/projects/{setup.id}/slots", headers={"X-API-Key": admin_key})
    assert {s["name"]: (s["weight"], s["active"]) for s in slots.json()} == {
        "A": (50, False),
        "B": (100, True),
    }
