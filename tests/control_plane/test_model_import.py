"""`POST /api/inference/models/load`: a file from the import directory, exported through
the `conch export` exporters (in a child process), registered and loaded; or refused
with nothing left behind.

One app with CONCH_IMPORT_DIR set, over the session's real SQL, Redis and Triton.
The exports run for real (each starts its private parity Triton), so only the
tests that must succeed or fail inside the exporter pay for one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import joblib
import numpy as np
import onnx
import orjson
import pytest
from fastapi import FastAPI
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import func, select
from tritonclient import grpc as triton_grpc

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.app import create_app
from control_plane.core.errors import ModelLoadError
from control_plane.core.settings import Settings
from control_plane.db.models import Model
from control_plane.imports.job_store import STALE_AFTER_S
from control_plane.imports.schemas import ImportJobRead
from control_plane.imports.service import ModelImports
from control_plane.lifecycle.manager import ModelLifecycle
from tests.control_plane.conftest import make_key, state_of
from tests.control_plane.waiting import until

LOAD = "/api/inference/models/load"
WEIGHTS = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10, np.ones(3, dtype=np.float32))


def write_linear_onnx(path: Path, *, random_noise: bool = False, bias: float = 1.0) -> None:
    """y = x @ W + b on [batch, 4]; with noise, y + U(0, 1): Triton and onnxruntime differ."""
    weights = numpy_helper.from_array(WEIGHTS[0], "W")
    offsets = numpy_helper.from_array(WEIGHTS[1] * bias, "b")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["linear"]),
    ]
    if random_noise:
        nodes += [
            helper.make_node("RandomUniformLike", ["linear"], ["noise"]),
            helper.make_node("Add", ["linear", "noise"], ["y"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["linear"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [weights, offsets],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def import_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imports")


@pytest.fixture(scope="module")
def import_settings(settings: Settings, import_dir: Path) -> Settings:
    return settings.model_copy(update={"import_dir": import_dir})


@pytest.fixture(scope="module")
async def import_app(import_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(import_settings, migrate=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def http(import_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=import_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://conch") as client:
        yield client


@pytest.fixture(scope="module")
async def writer(import_app: FastAPI) -> dict[str, str]:
    return {"X-API-Key": await make_key(import_app, ["read", "write"], name="importer")}


@pytest.fixture
def allow_pickles(import_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(import_settings, "allow_pickle_import", True)
    yield


def repository_entries(repository: Path) -> set[str]:
    """Every name at the repository root, staging directories included."""
    return set(os.listdir(repository))


async def models_named(app: FastAPI, name: str) -> int:
    async with state_of(app).sessionmaker() as session:
        count = await session.scalar(select(func.count()).where(Model.name == name))
    return int(count or 0)


def triton_infer(
    triton: EmbeddedTriton, triton_name: str, rows: NDArray[np.float32], inp: str, out: str
) -> NDArray[np.float32]:
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    try:
        assert client.is_model_ready(triton_name)
        tensor = triton_grpc.InferInput(inp, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer(triton_name, [tensor]).as_numpy(out)
    finally:
        client.close()
    assert result is not None
    return np.asarray(result, dtype=np.float32)


# --- the happy path -----------------------------------------------------------------------


async def test_onnx_file_is_exported_registered_and_served(
    http: httpx.AsyncClient,
    writer: dict[str, str],
    import_dir: Path,
    model_repository: Path,
    triton: EmbeddedTriton,
) -> None:
    write_linear_onnx(import_dir / "linear.onnx", bias=2.0)
    body = {"model_path": "linear.onnx", "model_type": "onnx"}
    response = await http.post(LOAD, json=body, headers=writer)
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert loaded["message"] == "Model loaded successfully"
    assert loaded["model_type"] == "onnx" and loaded["name"] == "linear"
    assert loaded["compiled"] is False and loaded["compile_note"] is None
    assert loaded["parity"]["passed"] is True and loaded["parity"]["rows"] > 0
    assert [s["name"] for s in loaded["steps"]] == ["convert", "write", "parity", "publish"]
    assert loaded["load_time"] > 0 and loaded["loaded_at"] is not None
    published = model_repository / loaded["triton_name"]
    on_disk = sum(p.stat().st_size for p in published.rglob("*") if p.is_file())
    assert loaded["model_size_mb"] == pytest.approx(on_disk / 1_000_000, abs=1e-3)

    # Registered like any other model, and loaded in the control plane's Triton.
    model = await http.get(f"/api/v1/models/{loaded['model_id']}", headers=writer)
    assert model.status_code == 200, model.text
    assert model.json()["framework"] == "onnx" and model.json()["load_state"] == "ready"
    rows = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    served = triton_infer(triton, loaded["triton_name"], rows, "x", "y")
    np.testing.assert_allclose(served, rows @ WEIGHTS[0] + 2 * WEIGHTS[1], rtol=1e-5)

    # The same file again: the same model, nothing written.
    again = await http.post(LOAD, json=body, headers=writer)
    assert again.status_code == 200, again.text
    assert again.json()["model_id"] == loaded["model_id"]
    assert again.json()["already_published"] is True
    assert again.json()["message"].startswith("Model already imported")


async def test_xgboost_json_needs_no_pickle_setting(
    http: httpx.AsyncClient, writer: dict[str, str], import_dir: Path, triton: EmbeddedTriton
) -> None:
    import xgboost

    rng = np.random.default_rng(2)
    features = rng.standard_normal((200, 3)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgboost.DMatrix(features, label=labels),
        num_boost_round=5,
    )
    booster.save_model(str(import_dir / "boost.json"))
    body = {
        "model_path": "boost.json",
        "model_type": "xgboost",
        "sample_data": features[:20].tolist(),
    }
    response = await http.post(LOAD, json=body, headers=writer)
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert loaded["framework"] == "xgboost" and loaded["task"] == "classification"
    assert loaded["parity"]["rows"] == 20  # the caller's rows, not generated ones
    served = triton_infer(triton, loaded["triton_name"], features[:8], "input", "probabilities")
    np.testing.assert_allclose(
        served[:, 1], booster.predict(xgboost.DMatrix(features[:8])), atol=1e-5
    )


# --- pickles ------------------------------------------------------------------------------


def write_sklearn_joblib(path: Path) -> tuple[object, NDArray[np.float32]]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    features = rng.standard_normal((100, 4)).astype(np.float32)
    model = LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))
    joblib.dump(model, path)
    return model, features


async def test_a_pickle_is_refused_without_the_setting(
    http: httpx.AsyncClient, writer: dict[str, str], import_dir: Path, model_repository: Path
) -> None:
    write_sklearn_joblib(import_dir / "refused.joblib")
    before = repository_entries(model_repository)
    for model_type in ("sklearn", "xgboost"):  # a booster pickle is a pickle too
        response = await http.post(
            LOAD, json={"model_path": "refused.joblib", "model_type": model_type}, headers=writer
        )
        assert response.status_code == 403, response.text
        assert "CONCH_ALLOW_PICKLE_IMPORT" in response.json()["message"]
        assert response.json()["details"]["setting"] == "CONCH_ALLOW_PICKLE_IMPORT"
    assert repository_entries(model_repository) == before


@pytest.mark.usefixtures("allow_pickles")
async def test_a_pickle_is_imported_with_the_setting(
    http: httpx.AsyncClient, writer: dict[str, str], import_dir: Path, triton: EmbeddedTriton
) -> None:
    model, features = write_sklearn_joblib(import_dir / "logreg.joblib")
    response = await http.post(
        LOAD, json={"model_path": "logreg.joblib", "model_type": "sklearn"}, headers=writer
    )
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert loaded["framework"] == "sklearn" and loaded["name"] == "logreg"
    served = triton_infer(triton, loaded["triton_name"], features[:6], "input", "probabilities")
    np.testing.assert_allclose(served, model.predict_proba(features[:6]), atol=1e-5)  # type: ignore[attr-defined]


# --- which files may be read --------------------------------------------------------------


async def test_import_is_off_without_an_import_directory(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # The session's app has no CONCH_IMPORT_DIR.
    key = await make_key(app, ["write"])
    response = await client.post(
        LOAD, json={"model_path": "x.onnx", "model_type": "onnx"}, headers={"X-API-Key": key}
    )
    assert response.status_code == 403, response.text
    assert "not configured" in response.json()["message"]
    assert response.json()["details"]["setting"] == "CONCH_IMPORT_DIR"


async def test_paths_outside_the_import_directory_are_refused(
    http: httpx.AsyncClient,
    writer: dict[str, str],
    import_dir: Path,
    tmp_path: Path,
) -> None:
    outside = tmp_path / "secret.onnx"
    write_linear_onnx(outside)
    (import_dir / "sub").mkdir(exist_ok=True)
    link = import_dir / "link.onnx"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    dir_link = import_dir / "elsewhere"
    dir_link.unlink(missing_ok=True)
    dir_link.symlink_to(tmp_path, target_is_directory=True)
    relative_out = "../" * (len(import_dir.parts) - 1) + outside.as_posix().lstrip("/")
    for given in (
        str(outside),  # absolute, elsewhere
        relative_out,  # ../../...
        f"sub/../{relative_out}",
        "link.onnx",  # a link in the directory pointing out of it
        "elsewhere/secret.onnx",  # through a linked directory
        "/etc/passwd",
    ):
        response = await http.post(
            LOAD, json={"model_path": given, "model_type": "onnx"}, headers=writer
        )
        assert response.status_code == 403, (given, response.text)
        text = response.text
        assert "outside the import directory" in response.json()["message"]
        assert str(import_dir) not in text and str(tmp_path) not in text.replace(given, "")
        assert response.json()["details"] == {"model_path": given}


async def test_missing_files_directories_and_unknown_types(
    http: httpx.AsyncClient, writer: dict[str, str], import_dir: Path
) -> None:
    missing = await http.post(
        LOAD, json={"model_path": "nope.onnx", "model_type": "onnx"}, headers=writer
    )
    assert missing.status_code == 404, missing.text
    assert missing.json()["message"] == "model file 'nope.onnx' not found in the import directory"
    (import_dir / "adir").mkdir(exist_ok=True)
    directory = await http.post(
        LOAD, json={"model_path": "adir", "model_type": "onnx"}, headers=writer
    )
    assert directory.status_code == 422, directory.text
    for model_type in ("ensemble", "custom", "tensorflow"):
        unknown = await http.post(
            LOAD, json={"model_path": "nope.onnx", "model_type": model_type}, headers=writer
        )
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["details"]["supported"] == [
            "onnx", "xgboost", "lightgbm", "torchscript", "sklearn",
        ]  # fmt: skip
    write_linear_onnx(import_dir / "shapeless.pt")
    torchscript = await http.post(
        LOAD, json={"model_path": "shapeless.pt", "model_type": "torchscript"}, headers=writer
    )
    assert torchscript.status_code == 422 and "input_shape" in torchscript.json()["message"]


async def test_only_a_global_write_key_imports(
    http: httpx.AsyncClient, import_app: FastAPI, import_dir: Path
) -> None:
    body = {"model_path": "nope.onnx", "model_type": "onnx"}
    reader = await make_key(import_app, ["read", "predict"])
    assert (await http.post(LOAD, json=body, headers={"X-API-Key": reader})).status_code == 403
    assert (await http.post(LOAD, json=body)).status_code == 401
    project = await http.post(
        "/api/v1/projects",
        json={"name": "import-scope-test"},
        headers={"X-API-Key": await make_key(import_app, ["admin"])},
    )
    assert project.status_code == 201, project.text
    scoped = await make_key(import_app, ["write"], project_id=project.json()["id"])
    refused = await http.post(LOAD, json=body, headers={"X-API-Key": scoped})
    assert refused.status_code == 403, refused.text


# --- failures leave nothing behind --------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "content", "reason"),
    [
        ("noisy.onnx", "noise", "parity check failed"),
        ("corrupt.onnx", b"this is not protobuf", "is not an ONNX model"),
    ],
)
async def test_a_failed_export_leaves_nothing_behind(
    http: httpx.AsyncClient,
    writer: dict[str, str],
    import_app: FastAPI,
    import_dir: Path,
    model_repository: Path,
    file_name: str,
    content: str | bytes,
    reason: str,
) -> None:
    path = import_dir / file_name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_linear_onnx(path, random_noise=True)
    before = repository_entries(model_repository)
    response = await http.post(
        LOAD, json={"model_path": file_name, "model_type": "onnx"}, headers=writer
    )
    assert response.status_code == 422, response.text
    assert reason in response.json()["message"]
    assert response.json()["details"]["step"] == ("parity" if content == "noise" else "convert")
    assert str(model_repository) not in response.text and "/tmp" not in response.text
    assert repository_entries(model_repository) == before  # no model, no staging directory
    assert await models_named(import_app, path.stem) == 0


async def test_a_model_that_fails_to_load_is_unregistered_and_removed(
    http: httpx.AsyncClient,
    writer: dict[str, str],
    import_app: FastAPI,
    import_dir: Path,
    model_repository: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Triton cannot be made to refuse a model its own parity run just served: faked.
    async def refuse(self: ModelLifecycle, name: str, wait_s: float, **_: object) -> None:
        raise ModelLoadError(f"model {name!r} failed to load: out of memory")

    monkeypatch.setattr(ModelLifecycle, "wait_loaded", refuse)
    write_linear_onnx(import_dir / "unloadable.onnx", bias=5.0)
    before = repository_entries(model_repository)
    response = await http.post(
        LOAD, json={"model_path": "unloadable.onnx", "model_type": "onnx"}, headers=writer
    )
    assert response.status_code == 422, response.text
    assert "did not load: " in response.json()["message"]
    assert "out of memory" in response.json()["message"]
    assert repository_entries(model_repository) == before
    assert await models_named(import_app, "unloadable") == 0


# --- long imports -------------------------------------------------------------------------


async def test_a_long_import_answers_202_and_can_be_polled(
    http: httpx.AsyncClient,
    writer: dict[str, str],
    import_dir: Path,
    import_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(import_settings, "import_wait_s", 0.01)
    write_linear_onnx(import_dir / "slow.onnx", bias=3.0)
    response = await http.post(
        LOAD, json={"model_path": "slow.onnx", "model_type": "onnx"}, headers=writer
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "exporting") and job["model_path"] == "slow.onnx"

    async def finished() -> bool:
        polled = await http.get(f"{LOAD}/{job['job_id']}", headers=writer)
        assert polled.status_code == 200, polled.text
        return bool(polled.json()["status"] in ("loaded", "failed"))

    await until(finished, "the import job did not finish")
    done = (await http.get(f"{LOAD}/{job['job_id']}", headers=writer)).json()
    assert done["status"] == "loaded", done
    assert done["result"]["name"] == "slow" and done["result"]["job_id"] == job["job_id"]
    unknown = await http.get(f"{LOAD}/0123456789abcdef", headers=writer)
    assert unknown.status_code == 404, unknown.text


async def test_an_export_past_its_time_is_stopped_and_leaves_nothing(
    http: httpx.AsyncClient,
    writer: dict[str, str],
    import_app: FastAPI,
    import_dir: Path,
    import_settings: Settings,
    model_repository: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Shorter than the child's start plus its parity Triton's: it is always stopped midway.
    monkeypatch.setattr(import_settings, "import_timeout_s", 1.0)
    write_linear_onnx(import_dir / "overdue.onnx", bias=7.0)
    before = repository_entries(model_repository)
    response = await http.post(
        LOAD, json={"model_path": "overdue.onnx", "model_type": "onnx"}, headers=writer
    )
    assert response.status_code == 422, response.text
    assert "did not finish within 1 s" in response.json()["message"]
    assert repository_entries(model_repository) == before  # SIGTERM unwound the staging
    assert await models_named(import_app, "overdue") == 0


async def test_any_replica_answers_the_poll_of_a_long_import(
    http: httpx.AsyncClient,
    writer: dict[str, str],
    import_dir: Path,
    import_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second app on the same SQL and Redis stands for the replica a load balancer
    sends the poll to."""
    monkeypatch.setattr(import_settings, "import_wait_s", 0.01)
    write_linear_onnx(import_dir / "elsewhere.onnx", bias=4.0)
    response = await http.post(
        LOAD, json={"model_path": "elsewhere.onnx", "model_type": "onnx"}, headers=writer
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    other = create_app(import_settings, migrate=False)
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://b") as b,
    ):

        async def loaded_elsewhere() -> bool:
            polled = await b.get(f"{LOAD}/{job_id}", headers=writer)
            assert polled.status_code == 200, polled.text
            assert polled.json()["status"] != "failed", polled.text
            return bool(polled.json()["status"] == "loaded")

        await until(loaded_elsewhere, "the other replica never saw the import finish")
        seen = (await b.get(f"{LOAD}/{job_id}", headers=writer)).json()
        assert seen == (await http.get(f"{LOAD}/{job_id}", headers=writer)).json()


async def test_a_job_whose_replica_stopped_reads_as_failed(
    import_app: FastAPI, http: httpx.AsyncClient, writer: dict[str, str]
) -> None:
    shared = import_app.state.components.get(ModelImports).shared
    assert shared is not None
    job_id = uuid.uuid4().hex
    abandoned = ImportJobRead(
        job_id=job_id, status="exporting", model_path="gone.onnx", model_type="onnx",
        name="gone", created_at=datetime.now(UTC),
    )  # fmt: skip
    await shared.publish(abandoned)
    polled = await http.get(f"{LOAD}/{job_id}", headers=writer)
    assert polled.json()["status"] == "exporting"  # its replica may still be at it
    stale = time.time() - STALE_AFTER_S - 1
    key = f"conch:{import_app.state.components.get(Settings).deployment_id}:imports:{job_id}"
    copy = {"job": abandoned.model_dump(mode="json"), "seen_at": stale}
    await shared.redis.set(key, orjson.dumps(copy))
    failed = (await http.get(f"{LOAD}/{job_id}", headers=writer)).json()
    assert failed["status"] == "failed", failed
    assert failed["error"]["error"] == "ImportInterruptedError"
    assert failed["error"]["details"] == {"last_status": "exporting"}
