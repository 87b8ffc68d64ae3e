"""A model's lineage, as its manifest records it.

An optimized model has no parent in the registry: `conch export --optimize` and the
import's `compile_model` optimize the graph inside the one export (convert, optimize,
write, parity, publish), so the optimized graph is the only one published under its
name, and the parity check ran on it. (An import of the same file without
`compile_model` publishes another model beside it, not its parent.) So the lineage
is what the exporter wrote: where it came from, what it became, what optimized it,
and how its outputs compared with the source model's.
"""

from __future__ import annotations

from dataclasses import dataclass

from conch_manifest.schema import GraphOptimization, Manifest, ParityResult


@dataclass(frozen=True)
class Lineage:
    exported_from: str  # the source framework and the library versions that read it
    published_as: str  # the format Triton serves and its backend
    optimization: str  # what optimized the graph, or "none: as converted"
    parity: str  # the exporter's comparison of Triton's outputs with the source model's
    optimized: bool

    @property
    def summary(self) -> str:
        """One line for the model list."""
        shape = "optimized" if self.optimized else "as converted"
        return f"{shape} · from {self.exported_from} · parity {self.parity.split(' ', 1)[0]}"


def lineage_of(manifest: Manifest) -> Lineage:
    versions = ", ".join(f"{lib} {v}" for lib, v in sorted(manifest.framework_versions.items()))
    return Lineage(
        exported_from=f"{manifest.framework} ({versions})" if versions else manifest.framework,
        published_as=f"{manifest.format} for Triton's {manifest.backend} backend",
        optimization=_optimization(manifest.optimization),
        parity=_parity(manifest.parity),
        optimized=manifest.optimization is not None,
    )


def _optimization(optimization: GraphOptimization | None) -> str:
    if optimization is None:
        return "none: the model file is as converted"
    return (
        f"{optimization.tool} graph optimization, {optimization.level} level: "
        f"{optimization.nodes_before} → {optimization.nodes_after} graph nodes"
    )


def _parity(parity: ParityResult) -> str:
    figures = []
    if parity.max_abs_diff is not None:
        figures.append(f"max |Δ| {parity.max_abs_diff:.3g}")
    if parity.tolerance is not None:
        figures.append(f"atol {parity.tolerance:.3g}")
    if parity.relative_tolerance is not None:
        figures.append(f"rtol {parity.relative_tolerance:.3g}")
    if parity.topk_match_rate is not None:
        figures.append(f"top-K identical for {parity.topk_match_rate:.1%} of users")
    text = f"{'passed' if parity.passed else 'failed'} on {parity.rows} rows"
    return f"{text} ({', '.join(figures)})" if figures else text
