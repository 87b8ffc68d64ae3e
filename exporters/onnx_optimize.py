"""`--optimize`: onnxruntime's offline graph optimization, a transform between convert and write.

onnxruntime rewrites the converted graph as it would when loading it (constant
folding, redundant node elimination, semantics-preserving fusions such as MatMul +
Add -> Gemm) and saves the result (`SessionOptions.optimized_model_filepath`).
That file is what the pipeline writes, parity-checks through Triton against the
source model's own predictions, and publishes; a parity failure publishes nothing.

The level is basic (ORT_ENABLE_BASIC). onnxruntime's graph-optimization docs: basic
rewrites run before graph partitioning and so apply to every execution provider;
extended ones run after it, only on nodes assigned to the CPU, CUDA or ROCm
provider, and may insert onnxruntime's own contrib operators; layout optimizations
(ORT_ENABLE_ALL) target the CPU, and onnxruntime warns that a model saved with them
"may contain hardware specific optimizations". A published model is served by CPU
and GPU instances and by NVIDIA's native onnxruntime backend, so only basic is
portable.

The saved model keeps the source's opset imports: onnxruntime lists every domain
it knows at its own versions, which an older runtime may refuse. A rewrite that
needs an operator outside those imports is refused, not published.

The serving backends optimize again when they load a model (ORT_ENABLE_ALL in
triton/config/backends/onnxruntime/model.py), so the offline pass is not expected to
make predictions faster. Measured (onnxruntime 1.32, one thread, p50 of 2,000 runs of
1 and 64 rows; sklearn scaler + logistic regression, XGBoost 100 trees, a torch MLP):
served with online optimization, optimized and converted files differ within the
run-to-run noise (-6% .. +8%, the same on identical graphs); session creation is up
to 0.1 ms shorter. What it changes is the file: the published graph is the one the
parity check ran on.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conch_manifest.schema import GraphOptimization
from exporters.errors import ExportError
from exporters.pipeline import Artifact

OPTIMIZED_HINT = (
    "; the graph was optimized (--optimize / compile_model): export without it to serve "
    "the model as converted"
)
_DEFAULT_DOMAINS = ("", "ai.onnx")  # two spellings of the standard operator set


@dataclass
class OnnxGraphOptimization:
    """The `optimize` step: the artifact's ONNX graph, optimized offline at the basic level."""

    name: str = "optimize"

    def apply(self, artifact: Artifact) -> Artifact:
        if artifact.format != "onnx":
            raise ExportError(
                f"graph optimization applies to ONNX models; a {artifact.format} model is "
                "served as saved (export it with --format onnx to optimize it)"
            )
        import onnxruntime

        optimized, before, after = optimize_onnx(artifact.model_bytes)
        return replace(
            artifact,
            model_bytes=optimized,
            optimization=GraphOptimization(nodes_before=before, nodes_after=after),
            framework_versions={
                **artifact.framework_versions,
                "onnxruntime": onnxruntime.__version__,
            },
            parity_hint=artifact.parity_hint + OPTIMIZED_HINT,
        )


def optimize_onnx(data: bytes) -> tuple[bytes, int, int]:
    """The graph optimized at the basic level, and its node count before and after."""
    import onnx
    import onnxruntime as ort

    source = onnx.load_model_from_string(data)
    with tempfile.TemporaryDirectory(prefix="conch-optimize-") as scratch:
        target = Path(scratch) / "model.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        try:
            # Basic rewrites precede partitioning: the CPU provider's output serves any provider.
            ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"onnxruntime could not optimize the graph: {first}") from None
        optimized = onnx.load_model(str(target))
    del optimized.opset_import[:]
    optimized.opset_import.extend(source.opset_import)
    declared = {_domain(opset.domain) for opset in source.opset_import}
    added = sorted(_domains(optimized.graph) - declared)
    if added:
        shown = ", ".join(repr(domain or "ai.onnx") for domain in added)
        raise ExportError(
            f"the optimized graph uses operators of {shown}, which the source model does "
            "not import; export without --optimize"
        )
    try:
        onnx.checker.check_model(optimized)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"the optimized graph is invalid: {first}") from None
    return (
        bytes(optimized.SerializeToString()),
        len(source.graph.node),
        len(optimized.graph.node),
    )


def _domain(domain: str) -> str:
    return "" if domain in _DEFAULT_DOMAINS else domain


def _domains(graph: Any) -> set[str]:
    """Every operator domain the graph's nodes use, subgraphs (If, Loop, Scan) included."""
    import onnx

    found: set[str] = set()
    for node in graph.node:
        found.add(_domain(node.domain))
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found |= _domains(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    found |= _domains(subgraph)
    return found
