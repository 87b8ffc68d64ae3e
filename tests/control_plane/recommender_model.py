"""A tiny matrix-factorisation recommender written straight as ONNX, with its manifest.

Same tensors as the exporters' recommenders (USER_INDEX in; ITEM_INDEX, SCORE out,
best first, seen items at -inf), so the control plane is tested against the
contract, not against one exporter. Deterministic bytes: re-registering it in a
persistent database (PostgreSQL) finds the same manifest hash.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conch_manifest.schema import (
    MANIFEST_FILENAME,
    Manifest,
    ParityResult,
    RecommenderSpec,
    TensorSpec,
    sha256_file,
)

N_USERS = 20
N_ITEMS = 30
MAX_K = 10
USER_IDS = [f"u{i}" for i in range(N_USERS)]
ITEM_IDS = [f"i{i}" for i in range(N_ITEMS)]
SEEN = {"u0": [0, 1, 2, 3, 4]}


def _graph(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(N_USERS, 4)).astype(np.float32)
    items_t = rng.normal(size=(4, N_ITEMS)).astype(np.float32)
    mask = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for user, seen in SEEN.items():
        mask[USER_IDS.index(user), seen] = -np.inf
    initializers = [
        numpy_helper.from_array(users, "user_factors"),
        numpy_helper.from_array(items_t, "item_factors_t"),
        numpy_helper.from_array(mask, "seen_mask"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([MAX_K], dtype=np.int64), "k"),
    ]
    nodes = [
        helper.make_node("Reshape", ["USER_INDEX", "flat"], ["rows"]),
        helper.make_node("Gather", ["user_factors", "rows"], ["u"], axis=0),
        helper.make_node("MatMul", ["u", "item_factors_t"], ["raw"]),
        helper.make_node("Gather", ["seen_mask", "rows"], ["m"], axis=0),
        helper.make_node("Add", ["raw", "m"], ["masked"]),
        helper.make_node("TopK", ["masked", "k"], ["SCORE", "ITEM_INDEX"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mf",
        [helper.make_tensor_value_info("USER_INDEX", TensorProto.INT64, ["batch", 1])],
        [
            helper.make_tensor_value_info("ITEM_INDEX", TensorProto.INT64, ["batch", MAX_K]),
            helper.make_tensor_value_info("SCORE", TensorProto.FLOAT, ["batch", MAX_K]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


_CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 64
input [ {{ name: "USER_INDEX" data_type: TYPE_INT64 dims: [ 1 ] }} ]
output [
  {{ name: "ITEM_INDEX" data_type: TYPE_INT64 dims: [ {k} ] }},
  {{ name: "SCORE" data_type: TYPE_FP32 dims: [ {k} ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ }}
"""


def write_recommender(repository: Path, triton_name: str, seed: int) -> Path:
    """Published as the exporters publish: written beside the repository, then renamed
    into it, so a replica scanning the repository never sees a half-written entry."""
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / triton_name
    if target.exists():
        return _write_files(target, triton_name, seed)
    staging = Path(tempfile.mkdtemp(prefix=f".{triton_name}-", dir=repository.parent))
    _write_files(staging, triton_name, seed)
    staging.rename(target)
    return target


def _write_files(root: Path, triton_name: str, seed: int) -> Path:
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "1" / "model.onnx").write_bytes(_graph(seed).SerializeToString())
    (root / "config.pbtxt").write_text(_CONFIG.format(name=triton_name, k=MAX_K))
    files = {rel: sha256_file(root / rel) for rel in ("1/model.onnx", "config.pbtxt")}
    manifest = Manifest(
        name=f"{triton_name}-mf",
        triton_name=triton_name,
        framework="recommender",
        task="recommendation",
        format="onnx",
        backend="onnxruntime",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        files=files,
        inputs=[TensorSpec(name="USER_INDEX", datatype="INT64", shape=[-1, 1])],
        outputs=[
            TensorSpec(name="ITEM_INDEX", datatype="INT64", shape=[-1, MAX_K]),
            TensorSpec(name="SCORE", datatype="FP32", shape=[-1, MAX_K]),
        ],
        max_batch_size=64,
        recommender=RecommenderSpec(
            algorithm="mf", user_ids=USER_IDS, item_ids=ITEM_IDS, max_k=MAX_K
        ),
        parity=ParityResult(passed=True, rows=0),
    )
    path = root / MANIFEST_FILENAME
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True))
    return root
