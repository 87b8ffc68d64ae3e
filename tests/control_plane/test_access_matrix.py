"""Every operation of the app's own route table by every kind of key.

The routes come from `app.routes`, each with the policy it declares; the
expected answer comes from the rules in `keys/access.py`, written out again
here as an independent oracle: a bad key is 401, a missing scope 403, a global
operation with a project-restricted key 403, anything outside the key's project
404 (and indistinguishable from an unknown id), and otherwise the operation's
own answer. A route without a sample request below fails the test, so a new
route cannot escape it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from control_plane.keys.access import Policy
from control_plane.keys.deps import declared_policy
from control_plane.keys.routes import AnyScopePolicy
from control_plane.keys.service import create_key
from tests.control_plane.conftest import make_key, make_project, state_of
from tests.control_plane.recommender_model import write_recommender

PATH_RESOURCES = ("model_id", "project_id", "slot_id", "key_id")
NO_SUCH_TASK = "task_" + "0" * 24
NO_SUCH_STREAM = "no-such-stream"
MISSING_ID = 999_999
# Starlette's own routes: documentation only, no data.
DOCUMENTATION_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# WebSockets authenticate in their handler, by close code (tests/control_plane/jobs/
# test_stream_ws.py).
WEBSOCKET_ROUTES = {"/api/inference/stream/{stream_id}/ws"}
# The web console: a sub-application with its own sign-in (a session, not a key per
# request), tested in tests/control_plane/console.
CONSOLE_ROUTES = {"/console"}


@dataclass(frozen=True)
class Kind:
    name: str
    scopes: tuple[str, ...] = ()
    restricted: bool = False
    bad: bool = False  # expired, revoked, malformed, unknown or missing: 401 everywhere

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


KINDS = [
    *(Kind(f"{s}", (s,)) for s in ("predict", "read", "write", "admin")),
    *(Kind(f"{s}@project", (s,), restricted=True) for s in ("predict", "read", "write", "admin")),
    *(Kind(name, bad=True) for name in ("expired", "revoked", "malformed", "unknown", "missing")),
]


@dataclass
class World:
    """Project P (the restricted keys' own) and project Q (someone else's), each with
    a model registered into it and served by its slot."""

    ids: dict[str, dict[str, int]]  # variant -> path parameter -> id
    slots: dict[str, int]  # variant -> a slot of that project
    tokens: dict[str, str | None]  # kind name -> X-API-Key value
    triton_names: dict[str, str]


@dataclass(frozen=True)
class Sample:
    """A valid request for a route and what it answers when the key may make it."""

    ok: frozenset[int]  # for the key's own resources (and any, for unrestricted keys)
    missing: int = 404  # for ids that do not exist, unrestricted keys
    body: Callable[[World, str], Any] | None = None
    body_ids: bool = False  # the body names a project or model too


def _ok(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


def _event(world: World, variant: str) -> dict[str, Any]:
    ids = world.ids[variant]
    return {
        "project": ids["project_id"],
        "deployment_slot": world.slots.get(variant, MISSING_ID),
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "impression",
        "recommendation_request_id": uuid.uuid4().hex,
    }


SAMPLES: dict[tuple[str, str], Sample] = {
    ("POST", "/inference/predict/{model_id}"): Sample(
        _ok(200), body=lambda w, v: {"user_id": "u1"}
    ),
    ("POST", "/inference/predict/{model_id}/batch"): Sample(
        _ok(200), body=lambda w, v: {"user_ids": ["u1", "u2"]}
    ),
    ("POST", "/inference/predict/project/{project_id}"): Sample(
        _ok(200), body=lambda w, v: {"user_id": "u1"}
    ),
    ("GET", "/inference/health"): Sample(_ok()),
    ("GET", "/inference/ready"): Sample(_ok()),
    ("GET", "/inference/models"): Sample(_ok()),
    ("GET", "/metrics"): Sample(_ok()),
    # A recommender asked for feature rows: the model's own 400.
    ("POST", "/api/v1/models/{model_id}/predict"): Sample(
        _ok(400), body=lambda w, v: {"data": [[1.0, 2.0]]}
    ),
    ("POST", "/api/v1/conversion_event/"): Sample(
        _ok(201), missing=400, body=_event, body_ids=True
    ),
    ("POST", "/api/v1/conversion_event/batch/"): Sample(
        _ok(201), missing=400, body=lambda w, v: [_event(w, v)], body_ids=True
    ),
    ("GET", "/api/v1/projects/{project_id}/ab_results"): Sample(_ok(200)),
    ("POST", "/api/v1/projects/{project_id}/promote"): Sample(
        _ok(200), body=lambda w, v: {"slot_id": w.slots.get(v, MISSING_ID)}
    ),
    ("POST", "/api/v1/keys"): Sample(
        _ok(201),
        body=lambda w, v: {"scopes": ["predict"], "project_id": w.ids[v]["project_id"]},
        body_ids=True,
    ),
    ("GET", "/api/v1/keys"): Sample(_ok(200)),
    ("DELETE", "/api/v1/keys/{key_id}"): Sample(_ok(200)),
    ("GET", "/api/v1/keys/self/webhook-secret"): Sample(_ok(200)),
    ("GET", "/api/v1/engine"): Sample(_ok(200)),
    ("POST", "/api/v1/projects"): Sample(
        _ok(201), body=lambda w, v: {"name": f"matrix-{uuid.uuid4().hex[:12]}"}
    ),
    ("GET", "/api/v1/projects"): Sample(_ok(200)),
    ("GET", "/api/v1/projects/{project_id}"): Sample(_ok(200)),
    ("PATCH", "/api/v1/projects/{project_id}"): Sample(
        _ok(200), body=lambda w, v: {"sticky": False}
    ),
    # Into the variant's project, each its own export (registering one name into two
    # projects is a conflict); into no project: test_model_projects.py.
    ("POST", "/api/v1/models"): Sample(
        _ok(201),
        body=lambda w, v: {
            "triton_name": w.triton_names[f"register_{'foreign' if v == 'foreign' else 'own'}"],
            "project_id": w.ids[v]["project_id"],
        },
        body_ids=True,
    ),
    ("GET", "/api/v1/models"): Sample(_ok(200)),
    ("GET", "/api/v1/models/{model_id}"): Sample(_ok(200)),
    ("POST", "/api/v1/models/{model_id}/load"): Sample(_ok(200)),
    # An active slot pins the model: the operation's own 409.
    ("POST", "/api/v1/models/{model_id}/unload"): Sample(_ok(409)),
    ("POST", "/api/v1/models/{model_id}/reload"): Sample(_ok(200)),
    ("GET", "/api/v1/models/{model_id}/metrics"): Sample(_ok(200)),
    ("POST", "/api/v1/projects/{project_id}/slots"): Sample(
        _ok(201),
        body=lambda w, v: {
            "name": f"s-{uuid.uuid4().hex[:8]}",
            "model_id": w.ids[v]["model_id"],
            "weight": 0,
            "active": False,
        },
        body_ids=True,
    ),
    ("GET", "/api/v1/projects/{project_id}/slots"): Sample(_ok(200)),
    ("PATCH", "/api/v1/slots/{slot_id}"): Sample(_ok(200), body=lambda w, v: {"weight": 100}),
    # The model an active slot serves cannot be deleted: the operation's own 409
    # (tests/control_plane/lifecycle/test_deleted.py deletes models; a project's key
    # deleting a model its project does not own: test_model_projects.py).
    ("DELETE", "/api/v1/models/{model_id}"): Sample(_ok(409)),
    # Seed 002's engine API: models named in the path by id (or name), checked by the handler.
    # The world's model is a recommender: the general door answers its raw output
    # tensors for a user row; a multi-batch answers each item itself (200 either way).
    ("POST", "/api/inference/predict"): Sample(
        _ok(200),
        body=lambda w, v: {"data": [[1.0]], "model_id": w.ids[v]["model_id"]},
        body_ids=True,
    ),
    ("POST", "/api/inference/predict/batch"): Sample(
        _ok(200),
        body=lambda w, v: {"data": [[1.0]], "model_id": w.ids[v]["model_id"]},
        body_ids=True,
    ),
    ("POST", "/api/inference/predict/multi-batch"): Sample(
        _ok(200),
        body=lambda w, v: {"requests": [{"data": [[1.0]], "model_id": w.ids[v]["model_id"]}]},
    ),
    ("GET", "/api/inference/engine/status"): Sample(_ok(200)),
    ("GET", "/api/inference/engine/config"): Sample(_ok(200)),
    # An empty change stores nothing (no revision, no reload): no side effect on the world.
    ("PUT", "/api/inference/engine/config"): Sample(_ok(200), body=lambda w, v: {}),
    ("POST", "/api/inference/engine/restart"): Sample(_ok(200)),
    ("DELETE", "/api/inference/engine/cache"): Sample(_ok(200)),
    ("GET", "/api/inference/models/list"): Sample(_ok(200)),
    ("GET", "/api/inference/models/{model_id}/info"): Sample(_ok(200), body_ids=True),
    ("GET", "/api/inference/models/{model_id}/metrics"): Sample(_ok(200), body_ids=True),
    ("DELETE", "/api/inference/models/{model_id}"): Sample(_ok(409), body_ids=True),  # pinned
    ("POST", "/api/inference/models/{model_id}/reload"): Sample(_ok(200), body_ids=True),
    ("GET", "/api/inference/metrics/performance"): Sample(_ok(200)),
    ("GET", "/api/inference/metrics/resources"): Sample(_ok(200)),
    ("GET", "/api/inference/health"): Sample(_ok()),
    # Import is off in the matrix's app (no CONCH_IMPORT_DIR): 403 even for a key that may.
    ("POST", "/api/inference/models/load"): Sample(
        _ok(403), body=lambda w, v: {"model_path": "m.onnx", "model_type": "onnx"}
    ),
    ("GET", "/api/inference/models/load/{job_id}"): Sample(_ok(404)),  # no such job
    # Async predictions: a task the world's model can run; polls name a task no key owns.
    ("POST", "/api/inference/predict/async"): Sample(
        _ok(202),
        body=lambda w, v: {"data": [[1.0]], "model_id": w.ids[v]["model_id"]},
        body_ids=True,
    ),
    ("GET", "/api/inference/predict/async"): Sample(_ok(200)),
    ("GET", "/api/inference/predict/async/queues"): Sample(_ok(200)),
    ("GET", "/api/inference/predict/async/{task_id}"): Sample(_ok(404)),
    ("DELETE", "/api/inference/predict/async/{task_id}"): Sample(_ok(404)),
    # Streams: a start on the world's model (its id generated); the rest name a stream
    # no key has.
    ("POST", "/api/inference/stream/start"): Sample(
        _ok(201),
        body=lambda w, v: {"model_id": w.ids[v]["model_id"], "buffer_size": 4},
        body_ids=True,
    ),
    ("POST", "/api/inference/stream/{stream_id}/send"): Sample(
        _ok(404), body=lambda w, v: {"data": [[1.0]], "sequence_id": 0}
    ),
    ("GET", "/api/inference/stream/{stream_id}/results"): Sample(_ok(404)),
    ("DELETE", "/api/inference/stream/{stream_id}"): Sample(_ok(404)),
    # The Open Inference Protocol: {name} is the model's id here.
    ("GET", "/v2"): Sample(_ok(200)),
    ("GET", "/v2/health/live"): Sample(_ok()),
    ("GET", "/v2/health/ready"): Sample(_ok()),
    ("GET", "/v2/models/{name}"): Sample(_ok(200)),
    ("GET", "/v2/models/{name}/versions/{version}"): Sample(_ok(200)),
    ("GET", "/v2/models/{name}/ready"): Sample(_ok(200)),
    ("GET", "/v2/models/{name}/versions/{version}/ready"): Sample(_ok(200)),
    ("GET", "/v2/models/{name}/config"): Sample(_ok(200)),
    ("GET", "/v2/models/{name}/versions/{version}/config"): Sample(_ok(200)),
    # A request Triton refuses (no inputs): the model's own 400.
    ("POST", "/v2/models/{name}/infer"): Sample(_ok(400), body=lambda w, v: {"inputs": []}),
    ("POST", "/v2/models/{name}/versions/{version}/infer"): Sample(
        _ok(400), body=lambda w, v: {"inputs": []}
    ),
}


def expected(policy: Policy, sample: Sample, kind: Kind, variant: str) -> frozenset[int]:
    """The oracle: what `kind` must get for this route and these resources."""
    if kind.bad:
        return _ok(401)
    assert policy.scope is not None
    # A key reading what belongs to itself needs no particular scope.
    if not kind.has_scope(policy.scope) and not isinstance(policy, AnyScopePolicy):
        return _ok(403)
    names_resource = policy.resource in PATH_RESOURCES or sample.body_ids
    if kind.restricted:
        if policy.resource == "global":
            return _ok(403)
        if variant != "own" and names_resource:
            return _ok(404)
    if variant == "missing":
        return _ok(sample.missing)
    return sample.ok


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as mounted, prefixes included
    route: APIRoute

    @property
    def policy(self) -> Policy:
        return declared_policy(self.route)

    @property
    def sample(self) -> Sample:
        return SAMPLES[(self.method, self.path)]


def operations(app: FastAPI) -> list[Operation]:
    """The app's route table as FastAPI mounts it (included routers expanded)."""
    found, others = [], set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            found += [Operation(m, str(context.path), route) for m in sorted(context.methods or ())]
        else:
            others.add(context.path)
    outside = others - WEBSOCKET_ROUTES - CONSOLE_ROUTES
    assert outside <= DOCUMENTATION_ROUTES, f"routes outside the access policies: {outside}"
    return found


def variants(operation: Operation) -> list[str]:
    in_path = any(f"{{{name}}}" in operation.path for name in PATH_RESOURCES)
    return ["own", "foreign", "missing"] if in_path or operation.sample.body_ids else ["own"]


@pytest.fixture(scope="module")
async def world(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> World:
    headers = {"X-API-Key": admin_key}
    triton_names = {
        v: f"cptest_acl_{v}_{uuid.uuid4().hex[:6]}"
        for v in ("own", "foreign", "register_own", "register_foreign")
    }
    for seed, name in enumerate(triton_names.values(), start=11):
        write_recommender(model_repository, name, seed)
    projects = {v: await make_project(client, admin_key, []) for v in ("own", "foreign")}
    model_ids = {}
    for variant, setup in projects.items():
        response = await client.post(
            "/api/v1/models",
            json={"triton_name": triton_names[variant], "project_id": setup.id},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        model_ids[variant] = response.json()["id"]
        response = await client.post(
            f"/api/v1/projects/{setup.id}/slots",
            json={"name": "Control", "model_id": model_ids[variant], "weight": 100},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        setup.slots["Control"] = response.json()["id"]
    victims = {
        v: (await client.post(
            "/api/v1/keys", json={"scopes": ["predict"], "project_id": projects[v].id},
            headers=headers,
        )).json()["id"]
        for v in ("own", "foreign")
    }  # fmt: skip
    ids = {
        v: {
            "model_id": model_ids[v],
            "project_id": projects[v].id,
            "slot_id": projects[v].slots["Control"],
            "key_id": victims[v],
        }
        for v in ("own", "foreign")
    }
    ids["missing"] = dict.fromkeys(PATH_RESOURCES, MISSING_ID)
    tokens: dict[str, str | None] = {}
    for kind in KINDS:
        if not kind.bad:
            project = projects["own"].id if kind.restricted else None
            tokens[kind.name] = await make_key(app, kind.scopes, project_id=project)
    state = state_of(app)
    async with state.sessionmaker() as session, session.begin():
        _, tokens["expired"] = await create_key(
            session,
            state.settings.secret_key.get_secret_value(),
            scopes=["admin"],
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    revoked = await make_key(app, ["admin"])
    listed = (await client.get("/api/v1/keys", headers=headers)).json()
    revoked_id = next(k["id"] for k in listed if revoked.startswith(k["display_prefix"]))
    assert (await client.delete(f"/api/v1/keys/{revoked_id}", headers=headers)).status_code == 200
    tokens["revoked"] = revoked
    tokens["malformed"] = "not a key"
    tokens["unknown"] = "conch_" + "A" * 38
    tokens["missing"] = None
    return World(
        ids=ids,
        slots={v: projects[v].slots["Control"] for v in ("own", "foreign")},
        tokens=tokens,
        triton_names=triton_names,
    )


async def _call(
    client: httpx.AsyncClient, world: World, operation: Operation, kind: Kind, variant: str
) -> httpx.Response:
    sample = operation.sample
    ids = world.ids[variant]
    path = operation.path.format(
        **ids,
        name=ids["model_id"],
        version=1,
        job_id="0" * 32,  # a job id's shape, no such job
        task_id=NO_SUCH_TASK,
        stream_id=NO_SUCH_STREAM,
    )
    token = world.tokens[kind.name]
    headers = {} if token is None else {"X-API-Key": token}
    body = sample.body(world, variant) if sample.body is not None else None
    return await client.request(operation.method, path, json=body, headers=headers)


def _shape(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], re.sub(r"\d+", "N", body["message"])


async def test_every_route_declares_a_policy_and_has_a_sample(app: FastAPI) -> None:
    table = {(op.method, op.path) for op in operations(app)}
    assert table == set(SAMPLES), (
        f"routes without a sample: {sorted(table - set(SAMPLES))}; "
        f"samples without a route: {sorted(set(SAMPLES) - table)}"
    )
    for operation in operations(app):
        assert operation.policy is declared_policy(operation.route)  # exactly one, or TypeError


async def test_outside_the_project_reads_exactly_like_unknown(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    # Runs before the matrix below, which revokes, promotes and creates in the world.
    compared = 0
    for operation in operations(app):
        policy = operation.policy
        if policy.resource not in PATH_RESOURCES:
            continue
        for kind in KINDS:
            if not kind.restricted or policy.scope is None or not kind.has_scope(policy.scope):
                continue
            foreign = await _call(client, world, operation, kind, "foreign")
            missing = await _call(client, world, operation, kind, "missing")
            assert _shape(foreign) == _shape(missing), (operation.path, kind.name)
            assert foreign.json()["details"].keys() == missing.json()["details"].keys()
            compared += 1
    assert compared > 30


async def test_every_operation_answers_every_kind_of_key_as_the_rules_say(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    wrong: list[str] = []
    for operation in operations(app):
        name = f"{operation.method} {operation.path}"
        if operation.policy.is_public:
            answers = {(await _call(client, world, operation, k, "own")).status_code for k in KINDS}
            if len(answers) != 1 or answers & {401, 403}:
                wrong.append(f"{name}: public, but answers {answers} by key")
            continue
        for variant in variants(operation):
            for kind in KINDS:
                response = await _call(client, world, operation, kind, variant)
                want = expected(operation.policy, operation.sample, kind, variant)
                if response.status_code not in want:
                    wrong.append(
                        f"{name} [{variant}] {kind.name}: {response.status_code}, "
                        f"expected {sorted(want)}: {response.text[:200]}"
                    )
                elif response.status_code >= 400 and "request_id" not in response.json():
                    wrong.append(f"{name} [{variant}] {kind.name}: not the error body")
    assert not wrong, "\n".join(wrong)
