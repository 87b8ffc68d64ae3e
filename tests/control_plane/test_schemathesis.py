"""Schemathesis over every operation of the OpenAPI document, against a real server.

A bounded, deterministic run of all four phases (examples, coverage, fuzzing,
and the stateful phase over the links it infers), once with an admin key and
once with a predict key. Every check runs except `positive_data_acceptance`,
which expects a 2xx for any schema-valid request, where a random id of a valid
shape is a 404 here. Zero 5xx, zero schema violations, zero undeclared statuses.

The fuzzer deletes, unloads and revokes whatever it finds, so it gets a stack of
its own: its own database, Triton, model repository and event channel.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.core.settings import Settings
from control_plane.db import upgrade
from control_plane.db.engine import create_engine, create_sessionmaker
from control_plane.db.models import ApiKey
from control_plane.keys.service import create_key
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.replicas import uvicorn_replica

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 12
# Far from the boundaries the fuzzer tries (1, 2**31 - 1): it must not revoke its own key.
KEY_IDS = {"admin": 1_234_567_891, "predict": 1_234_567_892}


@pytest.fixture(scope="module")
def fuzzed_stack(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A replica over a stack nobody else uses, with a model, a project and two keys."""
    root = tmp_path_factory.mktemp("schemathesis")
    repository = root / "model_repository"
    repository.mkdir()
    write_recommender(repository, "fuzzed_recommender", 7)
    database_url = f"sqlite:///{root / 'conch.db'}"
    upgrade(database_url)
    with EmbeddedTriton.on_free_ports(repository) as triton:
        own = settings.model_copy(
            update={
                "database_url": database_url,
                "triton_grpc_url": triton.grpc_url,
                "triton_http_url": triton.http_url,
                "model_repository": repository,
            }
        )
        tokens = _keys(own)
        channel = {"CONCH_MODEL_EVENTS_CHANNEL": f"conch:fuzz:{uuid.uuid4().hex}"}
        with uvicorn_replica(own, root, extra_env=channel) as url:
            _seed(url, tokens["admin"])
            yield url, tokens


def _keys(settings: Settings) -> dict[str, str]:
    async def create() -> dict[str, str]:
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        tokens = {}
        async with sessionmaker() as session, session.begin():
            for scope, key_id in KEY_IDS.items():
                key, tokens[scope] = await create_key(
                    session,
                    settings.secret_key.get_secret_value(),
                    scopes=[scope],
                    rate_limit="1000000/minute",
                )
                await session.flush()
                await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(id=key_id))
        await engine.dispose()
        return tokens

    return asyncio.run(create())


def _seed(url: str, admin: str) -> None:
    headers = {"X-API-Key": admin}
    model = httpx.post(
        f"{url}/api/v1/models", json={"triton_name": "fuzzed_recommender"}, headers=headers
    )
    assert model.status_code == 201, model.text
    project = httpx.post(f"{url}/api/v1/projects", json={"name": "fuzzed"}, headers=headers)
    assert project.status_code == 201, project.text
    slot = httpx.post(
        f"{url}/api/v1/projects/{project.json()['id']}/slots",
        json={"name": "Control", "model_id": model.json()["id"], "weight": 100},
        headers=headers,
        timeout=60,
    )
    assert slot.status_code == 201, slot.text


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scope", ["admin", "predict"])
def test_schemathesis_finds_nothing(
    fuzzed_stack: tuple[str, dict[str, str]], tmp_path: Path, scope: str
) -> None:
    url, tokens = fuzzed_stack
    result = subprocess.run(
        [
            str(SCHEMATHESIS), "run", f"{url}/openapi.json",
            "--header", f"X-API-Key: {tokens[scope]}",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic",
            "--generation-with-security-parameters", "false",
            "--workers", "1", "--request-timeout", "60", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
