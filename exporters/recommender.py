"""Implicit-feedback recommenders -> an ONNX top-K graph, served by onnxruntime.

For each USER_INDEX the graph returns the `max_k` best ITEM_INDEX values and
their SCOREs, best first, with the items the user interacted with in training
scored -inf (so they come last; when fewer than `max_k` items remain, the tail
is -inf). The graph is `TopK(Where(seen[u], -inf, user_vectors[u] @ item_vectors))`
built with `onnx.helper`, so both algorithms in `exporters.implicit` share it.
The seen mask is dense (users x items bytes): fine up to tens of millions of
cells, which the export refuses to exceed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

import numpy as np

from conch_manifest.schema import (
    RECOMMENDER_INPUT,
    RECOMMENDER_ITEMS,
    RECOMMENDER_SCORES,
    RecommenderSpec,
    TensorSpec,
)
from exporters import parity
from exporters.arrays import Array
from exporters.config import TensorConfig
from exporters.errors import ExportError
from exporters.implicit import RecommenderModel
from exporters.pipeline import (
    Artifact,
    ExportResult,
    ExportTarget,
    ParityCase,
    ServingOptions,
    run_export,
)

DEFAULT_MAX_K = 1000
MAX_MASK_CELLS = 50_000_000
PARITY_USERS = 200
PARITY_K = 20
ONNX_OPSET = 17


def load_recommender(path: Path) -> RecommenderModel:
    if not path.is_file():
        raise ExportError(f"model file {path} does not exist")
    try:
        return RecommenderModel.load(path)
    except Exception as exc:  # zip, npz and shape errors all mean "not a usable model"
        raise ExportError(f"could not load {path} as a Conch recommender (.npz): {exc!r}") from exc


def build_topk_onnx(model: RecommenderModel, max_k: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    seen = model.seen.toarray() > 0
    initializers = [
        numpy_helper.from_array(model.user_vectors.astype(np.float32), "user_vectors"),
        numpy_helper.from_array(model.item_vectors.astype(np.float32), "item_vectors"),
        numpy_helper.from_array(seen, "seen"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), "minus_inf"),
        numpy_helper.from_array(np.array([max_k], dtype=np.int64), "k"),
    ]
    nodes = [
        helper.make_node("Reshape", [RECOMMENDER_INPUT, "flat_shape"], ["users"]),
        helper.make_node("Gather", ["user_vectors", "users"], ["user_rows"], axis=0),
        helper.make_node("MatMul", ["user_rows", "item_vectors"], ["raw_scores"]),
        helper.make_node("Gather", ["seen", "users"], ["user_seen"], axis=0),
        helper.make_node("Where", ["user_seen", "minus_inf", "raw_scores"], ["scores"]),
        helper.make_node(
            "TopK",
            ["scores", "k"],
            [RECOMMENDER_SCORES, RECOMMENDER_ITEMS],
            axis=-1,
            largest=1,
            sorted=1,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "conch",
        inputs=[helper.make_tensor_value_info(RECOMMENDER_INPUT, TensorProto.INT64, ["batch", 1])],
        outputs=[
            helper.make_tensor_value_info(RECOMMENDER_ITEMS, TensorProto.INT64, ["batch", max_k]),
            helper.make_tensor_value_info(RECOMMENDER_SCORES, TensorProto.FLOAT, ["batch", max_k]),
        ],
        initializer=initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    onnx_model.ir_version = 8  # readable by every onnxruntime Conch supports
    onnx.checker.check_model(onnx_model)
    return bytes(onnx_model.SerializeToString())


def reference_topk(model: RecommenderModel, users: Array, k: int) -> tuple[Array, Array]:
    """numpy's answer: item indices and scores, best first (stable order on ties)."""
    scores = model.scores(users)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def export_recommender(
    model_path: Path,
    *,
    max_k: int | None = None,
    parity_users: int = PARITY_USERS,
    parity_k: int = PARITY_K,
    **target: Unpack[ExportTarget],
) -> ExportResult:
    """Export a top-`max_k` graph; parity compares `parity_k` items for `parity_users` users."""

    def convert(name: str, options: ServingOptions) -> Artifact:
        return _convert(model_path, name, options, max_k, parity_users, parity_k)

    return run_export(convert, **target)


def _convert(
    model_path: Path,
    name: str,
    options: ServingOptions,
    max_k: int | None,
    parity_users: int,
    parity_k: int,
) -> Artifact:
    import onnx

    model = load_recommender(model_path)
    n_users, n_items = len(model.user_ids), len(model.item_ids)
    if n_users * n_items > MAX_MASK_CELLS:
        raise ExportError(
            f"{n_users} users x {n_items} items exceeds the dense seen-mask limit "
            f"({MAX_MASK_CELLS} cells)"
        )
    max_k = min(n_items, DEFAULT_MAX_K) if max_k is None else max_k
    if not 1 <= max_k <= n_items:
        raise ExportError(
            f"max_k must be between 1 and the number of items ({n_items}), not {max_k}"
        )
    if options.max_batch_size < 1:
        raise ExportError("recommenders are batched: --max-batch-size must be at least 1")

    # Sampled users, the same ones every time: the parity check is reproducible.
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(n_users, size=min(parity_users, n_users), replace=False))
    k = min(parity_k, max_k)
    want_items, want_scores = reference_topk(model, users, k)

    config = options.config(
        name,
        "onnxruntime",
        inputs=(TensorConfig(RECOMMENDER_INPUT, "INT64", (1,)),),
        outputs=(
            TensorConfig(RECOMMENDER_ITEMS, "INT64", (max_k,)),
            TensorConfig(RECOMMENDER_SCORES, "FP32", (max_k,)),
        ),
    )
    return Artifact(
        name=name,
        model_filename="model.onnx",
        model_bytes=build_topk_onnx(model, max_k),
        config=config,
        framework="recommender",
        task="recommendation",
        format="onnx",
        inputs=[
            TensorSpec(
                name=RECOMMENDER_INPUT,
                datatype="INT64",
                shape=[-1, 1],
                meaning="row of the user in recommender.user_ids",
            )
        ],
        outputs=[
            TensorSpec(
                name=RECOMMENDER_ITEMS,
                datatype="INT64",
                shape=[-1, max_k],
                meaning="best items first, indices into recommender.item_ids",
            ),
            TensorSpec(
                name=RECOMMENDER_SCORES,
                datatype="FP32",
                shape=[-1, max_k],
                meaning="score of each item; -inf marks items seen in training / no more items",
            ),
        ],
        parity=ParityCase(
            inputs={RECOMMENDER_INPUT: users.reshape(-1, 1).astype(np.int64)},
            compare=parity.topk(
                want_items,
                want_scores,
                items_output=RECOMMENDER_ITEMS,
                scores_output=RECOMMENDER_SCORES,
                k=k,
            ),
        ),
        framework_versions={"numpy": np.__version__, "onnx": onnx.__version__},
        recommender=RecommenderSpec(
            algorithm=model.algorithm,
            user_ids=model.user_ids,
            item_ids=model.item_ids,
            max_k=max_k,
        ),
    )
