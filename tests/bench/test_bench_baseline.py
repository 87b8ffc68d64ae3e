"""The plain-FastAPI baseline answers exactly what onnxruntime computes."""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from conch_bench.baseline import BaselineServer, Variant
from conch_bench.loadgen import LoadSpec, run_load
from conch_bench.models import BenchModel
from conch_bench.targets import RestTarget, render_bodies

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", ["naive", "tuned"])
def test_baseline_matches_onnxruntime(bench_tabular: BenchModel, variant: Variant) -> None:
    assert bench_tabular.onnx_path is not None
    rows = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    session = ort.InferenceSession(str(bench_tabular.onnx_path))
    (expected,) = session.run(["probabilities"], {"X": rows})
    with BaselineServer(bench_tabular.onnx_path, variant=variant) as server:
        response = httpx.post(f"{server.url}/predict", json={"data": rows.tolist()})
        assert response.status_code == 200
        body = response.json()
        assert body["model"] == bench_tabular.triton_name
        np.testing.assert_allclose(np.asarray(body["predictions"]), expected, rtol=1e-6)

        bad = httpx.post(f"{server.url}/predict", json={"data": [[1.0, 2.0]]})
        assert bad.status_code == 400

        bodies = render_bodies('{"data": $DATA}', count=4, rows=1, features=16)
        target = RestTarget(url=f"{server.url}/predict", bodies=bodies)
        summary = run_load(target, LoadSpec(concurrency=2, duration_s=1.0, warmup_s=0.3))
        assert summary.errors == 0, summary.first_errors
        assert summary.requests > 5


def test_render_bodies_fills_the_template() -> None:
    (body,) = render_bodies('{"data": $DATA}', count=1, rows=2, features=3)
    import orjson

    assert np.asarray(orjson.loads(body)["data"]).shape == (2, 3)
    users = render_bodies('{"user_id": "$USER_ID", "cutoff": 10}', count=3, user_ids=["a", "b"])
    assert [orjson.loads(b)["user_id"] for b in users] == ["a", "b", "a"]
