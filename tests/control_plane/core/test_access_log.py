"""Logs: one access line per request as JSON (or for a console), with the request
id, route template, status, latency, model and key id, never the key itself."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from control_plane.core import access_log
from control_plane.core.settings import Settings
from control_plane.keys.service import create_key
from tests.control_plane.conftest import UNLIMITED, make_key, state_of
from tests.control_plane.secret_key import TEST_SECRET_KEY
from tests.control_plane.waiting import until, until_served

PREDICT_ROUTE = "/inference/predict/{model_id}"


@pytest.fixture
def captured(settings: Settings) -> Iterator[io.StringIO]:
    """Where the tests' logging writes; the session's own logging is put back after."""
    stream = io.StringIO()
    yield stream
    access_log.configure_logging(
        settings.log_level, settings.log_output, access_log=settings.access_log
    )


async def _key_with_id(app: FastAPI) -> tuple[str, int]:
    state = state_of(app)
    async with state.sessionmaker() as session, session.begin():
        row, token = await create_key(
            session, TEST_SECRET_KEY, scopes=["predict"], rate_limit=UNLIMITED, name="logged"
        )
    return token, row.id


async def _line_of(stream: io.StringIO, request_id: str) -> str:
    """The line that names `request_id`, once the writing thread has written it."""
    found: list[str] = []

    async def written() -> bool:
        found[:] = [line for line in stream.getvalue().splitlines() if request_id in line]
        return bool(found)

    await until(written, f"no log line for request {request_id}")
    return found[0]


async def _predict(
    client: httpx.AsyncClient, model_id: int, key: str, request_id: str
) -> httpx.Response:
    headers = {"X-API-Key": key, "X-Request-ID": request_id}
    return await client.post(
        f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers=headers
    )


async def test_a_prediction_logs_one_json_line_without_the_key(
    app: FastAPI,
    client: httpx.AsyncClient,
    model_ids: Mapping[str, int],
    recommenders: Mapping[str, str],
    captured: io.StringIO,
) -> None:
    key, key_id = await _key_with_id(app)
    await until_served(client, model_ids["a"], key)
    access_log.configure_logging("INFO", "json", stream=captured)
    assert (await _predict(client, model_ids["a"], key, "json-line-1")).status_code == 200
    # A key that is refused is not written either.
    bad = await _predict(client, model_ids["a"], "conch_not-a-real-key-0123456789", "json-line-2")
    assert bad.status_code == 401

    line: dict[str, Any] = json.loads(await _line_of(captured, "json-line-1"))
    assert line.pop("timestamp").endswith("+00:00")
    assert line.pop("latency_ms") > 0
    assert line == {
        "level": "INFO",
        "logger": "conch.access",
        "message": line["message"],
        "request_id": "json-line-1",
        "route": PREDICT_ROUTE,
        "method": "POST",
        "status": 200,
        "model": recommenders["a"],
        "key_id": key_id,
    }
    assert line["message"].startswith(f"POST {PREDICT_ROUTE} 200 ")
    refused = json.loads(await _line_of(captured, "json-line-2"))
    assert (refused["status"], refused["route"], "key_id" in refused) == (401, PREDICT_ROUTE, False)
    written = captured.getvalue()
    assert key not in written and "not-a-real-key" not in written
    ours = [entry for entry in written.splitlines() if '"logger":"conch.' in entry]
    assert not [entry for entry in ours if f"/predict/{model_ids['a']}" in entry]  # templates


async def test_console_lines_and_records_inside_a_request(
    app: FastAPI, client: httpx.AsyncClient, model_ids: Mapping[str, int], captured: io.StringIO
) -> None:
    key = await make_key(app, ["predict"])
    await until_served(client, model_ids["a"], key)
    access_log.configure_logging("INFO", "console", stream=captured)
    assert (await _predict(client, model_ids["a"], key, "console-line-1")).status_code == 200
    line = await _line_of(captured, "console-line-1")
    assert f" INFO conch.access: POST {PREDICT_ROUTE} 200 " in line
    assert line.endswith("]") and "[request console-line-1, key " in line
    assert key not in captured.getvalue()

    # Any record logged while a request is served names the request.
    _, token = access_log.begin_request("inside-1")
    try:
        logging.getLogger("conch.test").warning("something happened")
    finally:
        access_log.end_request(token)
    assert (await _line_of(captured, "inside-1")).endswith("something happened [request inside-1]")


async def test_warning_level_or_access_log_off_leaves_requests_out(
    app: FastAPI, client: httpx.AsyncClient, model_ids: Mapping[str, int], captured: io.StringIO
) -> None:
    key = await make_key(app, ["predict"])
    await until_served(client, model_ids["a"], key)
    for number, (level, access) in enumerate((("WARNING", True), ("INFO", False))):
        access_log.configure_logging(level, "json", access_log=access, stream=captured)
        request_id = f"quiet-{number}"
        assert (await _predict(client, model_ids["a"], key, request_id)).status_code == 200
        logging.getLogger("conch.test").warning("marker-%d", number)
        await _line_of(captured, f"marker-{number}")  # written after the request's line
        assert request_id not in captured.getvalue()
    # uvicorn's own access log never repeats the line.
    uvicorn_access = logging.getLogger("uvicorn.access")
    assert (uvicorn_access.handlers, uvicorn_access.propagate) == ([], False)


def test_log_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    production = Settings(environment="production", secret_key=TEST_SECRET_KEY)
    assert (production.log_level, production.log_output) == ("INFO", "json")
    assert Settings(environment="development").log_output == "console"
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "CONSOLE")
    chosen = Settings(environment="production", secret_key=TEST_SECRET_KEY)
    assert (chosen.log_level, chosen.log_output) == ("DEBUG", "console")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match=r"log_format|LOG_FORMAT"):
        Settings()


def _facts() -> access_log.RequestFacts:
    facts = access_log.RequestFacts("req-direct")
    facts.model, facts.key_id = "direct_model", 7
    return facts


class _Formatted(logging.Handler):
    """Another handler: what JsonFormatter makes of each record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(access_log.JsonFormatter().format(record))


def test_the_access_line_built_directly_is_the_formatters_line(captured: io.StringIO) -> None:
    """JSON lines with only Conch's handler: the line is built without a LogRecord;
    it must read exactly as JsonFormatter writes the record it stands for."""
    access_log.configure_logging("INFO", "json", stream=captured)
    access_log.log_request(_facts(), "POST", "/r/{id}", 201, 0.0123456)
    other = _Formatted()
    logging.getLogger().addHandler(other)  # another handler: records again, for both
    try:
        access_log.log_request(_facts(), "POST", "/r/{id}", 201, 0.0123456)
    finally:
        logging.getLogger().removeHandler(other)
    access_log.configure_logging("INFO", "json", stream=io.StringIO())  # writes what is pending
    direct, through_record = (
        json.loads(captured.getvalue().splitlines()[0]),
        json.loads(other.lines[0]),
    )
    assert direct.pop("timestamp")[:19] <= through_record.pop("timestamp")[:19]
    assert list(direct.items()) == list(through_record.items())
    assert direct == {
        "level": "INFO", "logger": "conch.access", "message": "POST /r/{id} 201 12.3 ms",
        "request_id": "req-direct", "route": "/r/{id}", "method": "POST", "status": 201,
        "latency_ms": 12.346, "model": "direct_model", "key_id": 7,
    }  # fmt: skip
