"""The Conch REST arms: control planes started by the suite beside its Triton.

Two control planes (uvicorn, same worker count as the baseline) share one SQLite
database and one embedded Redis: `conch-rest` with rate limiting on and
`conch-rest-nolimit` with `CONCH_RATE_LIMIT_ENABLED=false`. The predict key's
limit is far above what the machine can serve, so the limiter's Redis round trip
is on the path but never rejects. `conch-rest-manykeys` goes to the limited
control plane with MANY_KEYS predict keys cycled per request: one bucket per
key, as with real traffic, instead of one hot bucket (the limiter's best case).
Recommenders go through a project with one slot
(`/inference/predict/project/{id}`: key, slot choice, limiter); float-row models
through `/api/v1/models/{id}/predict` when the control plane has it. A model's
`__priority` twin (models.py) is registered too, for the priority pass.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conch_bench.models import BenchModel
from conch_bench.native import request_spec
from conch_bench.targets import RestTarget, TritonTarget, render_bodies
from conch_embedded.process import ManagedProcess, ProcessStartError, free_port, tail
from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.locations import state_dir

# Far above anything one machine serves: the limiter runs, but never says no.
BENCH_RATE_LIMIT = "100000000/minute"
MANY_KEYS = 1000


@dataclass(frozen=True)
class ConchEndpoint:
    """A running control plane (rate limiting on), optionally a twin with it off."""

    url: str
    api_key: str
    url_nolimit: str | None = None
    model_ids: dict[str, str] = field(default_factory=dict)  # bench key -> Conch model id
    project_ids: dict[str, str] = field(default_factory=dict)  # bench key -> project id
    many_keys: tuple[str, ...] = ()  # predict keys for the many-keys arm
    priority_ids: dict[str, str] = field(default_factory=dict)  # bench key -> its twin's id
    pid: int | None = None  # the limited plane's uvicorn, when the suite started it
    # The environment the suite started its planes with (holds the secret): what
    # `another_plane` starts from; empty for an external control plane.
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def target(
        self, model: BenchModel, base: str, batch_size: int, *, many_keys: bool = False
    ) -> RestTarget:
        model_id = self.model_ids.get(model.key, model.triton_name)
        if model.key == "recommender":
            project = self.project_ids.get(model.key)
            path = (
                f"/inference/predict/project/{project}"
                if project
                else f"/inference/predict/{model_id}"
            )
        else:
            path = f"/api/v1/models/{model_id}/predict"
        bodies = render_bodies(
            model.rest_template, rows=batch_size, features=model.features, user_ids=model.user_ids
        )
        url = base.rstrip("/") + path
        if many_keys:
            return RestTarget(url=url, bodies=bodies, key_header="X-API-Key", keys=self.many_keys)
        return RestTarget(url=url, bodies=bodies, headers={"X-API-Key": self.api_key})

    def engine_target(
        self,
        model: BenchModel,
        base: str,
        batch_size: int,
        *,
        priority: str | None = None,
        on_twin: bool = False,
    ) -> RestTarget:
        """Seed 002's `POST /api/inference/predict` with the same rows as `target`'s,
        at `priority`; `on_twin`: to the model's `__priority` twin."""
        model_id = self.model_ids.get(model.key, model.triton_name)
        if on_twin:
            model_id = self.priority_ids.get(model.key, model.priority_name or model.triton_name)
        extra = "" if priority is None else f', "priority": "{priority}"'
        template = f'{{"model_id": "{model_id}", "data": $DATA{extra}}}'
        bodies = render_bodies(template, rows=batch_size, features=model.features)
        url = base.rstrip("/") + "/api/inference/predict"
        return RestTarget(url=url, bodies=bodies, headers={"X-API-Key": self.api_key})

    def v2_target(self, triton: TritonTarget, base: str) -> RestTarget:
        """The request the triton-http arm sends, to Conch's `/v2/` door with a key."""
        spec = request_spec(triton)
        assert spec is not None  # an HTTP target always has one
        url = f"{base.rstrip('/')}/v2/models/{triton.model}/infer"
        headers = {**spec.headers, "X-API-Key": self.api_key}
        return RestTarget(url=url, bodies=spec.bodies, headers=headers)


def probe(target: RestTarget) -> str | None:
    """None when one request succeeds, else why (so an arm is skipped with a reason)."""
    headers = {"Content-Type": "application/json", **target.headers}
    if target.key_header and target.keys:
        headers[target.key_header] = target.keys[0]
    try:
        response = httpx.request(
            target.method, target.url, content=target.bodies[0], headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.status_code != target.expect_status:
        path = httpx.URL(target.url).path
        return f"HTTP {response.status_code} from {path}: {response.text[:80]}"
    return None


def _control_plane(env: dict[str, str], workers: int, name: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "control_plane.app:create_app",
        "--factory",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers={workers}",
        "--no-access-log",
        "--log-level=warning",
    ]
    log = state_dir() / "logs" / f"bench-{name}-{port}.log"
    process = ManagedProcess(name, argv, log_path=log, env=env)
    process.spawn()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.exit_code() is not None:
            raise ProcessStartError(f"{name} exited during start-up: {tail(log, 5)}")
        try:
            with urllib.request.urlopen(f"{url}/inference/health", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    process.stop()
    raise ProcessStartError(f"{name} not healthy within 90s (log: {log})")


async def _create_keys(database_url: str, secret: str) -> tuple[str, str, tuple[str, ...]]:
    from control_plane.db.engine import create_engine, create_sessionmaker
    from control_plane.keys.service import create_key

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            _, admin = await create_key(session, secret, scopes=["admin"], name="bench-admin")
            _, predict = await create_key(
                session, secret, scopes=["predict"], name="bench", rate_limit=BENCH_RATE_LIMIT
            )
            many = [
                (
                    await create_key(
                        session,
                        secret,
                        scopes=["predict"],
                        name=f"bench-many-{i}",
                        rate_limit=BENCH_RATE_LIMIT,
                    )
                )[1]
                for i in range(MANY_KEYS)
            ]
    finally:
        await engine.dispose()
    return admin, predict, tuple(many)


def _register(
    url: str, admin: str, models: list[BenchModel]
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Conch ids of the models, the recommenders' projects and the priority twins."""
    headers = {"X-API-Key": admin}
    model_ids: dict[str, str] = {}
    project_ids: dict[str, str] = {}
    priority_ids: dict[str, str] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for model in models:
            response = client.post("/api/v1/models", json={"triton_name": model.triton_name})
            response.raise_for_status()
            model_ids[model.key] = str(response.json()["id"])
            if model.priority_name is not None:
                twin = client.post("/api/v1/models", json={"triton_name": model.priority_name})
                twin.raise_for_status()
                priority_ids[model.key] = str(twin.json()["id"])
            if model.key != "recommender":
                continue
            project = client.post("/api/v1/projects", json={"name": f"bench-{model.key}"})
            project.raise_for_status()
            project_id = project.json()["id"]
            slot = {"name": "main", "model_id": int(model_ids[model.key]), "weight": 1}
            client.post(f"/api/v1/projects/{project_id}/slots", json=slot).raise_for_status()
            project_ids[model.key] = str(project_id)
    return model_ids, project_ids, priority_ids


@contextmanager
def conch_stack(
    triton: EmbeddedTriton, repository: Path, models: list[BenchModel], *, workers: int = 1
) -> Iterator[ConchEndpoint]:
    """Redis, a fresh SQLite database, both control planes, keys and registered models."""
    from conch_embedded.redis_server import EmbeddedRedis
    from control_plane.db import upgrade

    with ExitStack() as stack:
        redis = stack.enter_context(EmbeddedRedis())
        database = state_dir() / "bench" / "conch-bench.db"
        database.parent.mkdir(parents=True, exist_ok=True)
        database.unlink(missing_ok=True)
        database_url = f"sqlite:///{database}"
        upgrade(database_url)
        # A real secret, as in production: the development key would add the
        # loopback-only guard (core/loopback.py) to the path being measured.
        secret = secrets.token_urlsafe(32)
        admin, predict, many = asyncio.run(_create_keys(database_url, secret))
        env = dict(
            os.environ,
            CONCH_ENVIRONMENT="production",
            SECRET_KEY=secret,
            DATABASE_URL=database_url,
            REDIS_URL=redis.url,
            MODEL_EVENTS_REDIS_URL=redis.url,
            INFERENCE_RATE_LIMIT=BENCH_RATE_LIMIT,
            CONCH_TRITON_GRPC_URL=triton.grpc_url,
            CONCH_TRITON_HTTP_URL=triton.http_url,
            CONCH_MODEL_REPOSITORY=str(repository),
        )
        limited, url = _control_plane(env, workers, "conch-rest")
        stack.callback(limited.stop)
        # Async tasks run on the limited plane only, as the sync door's predictions do:
        # the two share Redis, and a second worker would double the async capacity.
        unlimited, url_nolimit = _control_plane(
            {**env, "CONCH_RATE_LIMIT_ENABLED": "false", "CONCH_TASK_WORKERS": "0"},
            workers,
            "conch-rest-nolimit",
        )
        stack.callback(unlimited.stop)
        model_ids, project_ids, priority_ids = _register(url, admin, models)
        yield ConchEndpoint(
            url, predict, url_nolimit, model_ids, project_ids, many, priority_ids, limited.pid,
            env,
        )  # fmt: skip


@contextmanager
def another_plane(
    conch: ConchEndpoint, name: str, overrides: dict[str, str], *, workers: int = 1
) -> Iterator[tuple[str, int | None]]:
    """One more control plane beside the suite's (same SQLite, Redis, Triton, keys and
    registered models), its environment changed by `overrides`: its URL and pid."""
    if not conch.env:
        raise ProcessStartError("an external control plane: no environment to start another")
    process, url = _control_plane({**conch.env, **overrides}, workers, name)
    try:
        yield url, process.pid
    finally:
        process.stop()
