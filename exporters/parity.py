"""Compare what Triton returned with what the source framework predicted.

Default tolerances, and why:
- probabilities (classifiers): absolute 1e-5. They live in [0, 1] and float32
  arithmetic in the ONNX graph stays within a few 1e-7 of the framework.
- regressors and neural-network outputs: relative 1e-4, i.e.
  |triton - source| <= 1e-4 * max(1, |source|). Tree ensembles add hundreds of
  float32 leaf values whose sum is a large number (LightGBM on diabetes: ~5e-5
  absolute on values around 150), so an absolute bound would be meaningless.
- recommenders: the top-K item lists must be identical, except that items with
  tied scores (within 1e-5 relative) may come in either order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from conch_manifest.schema import ParityResult
from exporters.arrays import Array

PROBABILITY_TOLERANCE = 1e-5
RELATIVE_TOLERANCE = 1e-4
TOPK_SCORE_TOLERANCE = 1e-5

Comparator = Callable[[dict[str, Array]], ParityResult]


def numeric(expected: dict[str, Array], tolerance: float, *, relative: bool) -> Comparator:
    """Every output within `tolerance` (absolute, or relative to max(1, |expected|))."""

    def compare(actual: dict[str, Array]) -> ParityResult:
        worst: tuple[float, float, str, int] = (-1.0, 0.0, "", 0)  # error, abs diff, output, row
        for name, want in expected.items():
            want64 = np.asarray(want, dtype=np.float64).reshape(len(want), -1)
            got64 = np.asarray(actual[name], dtype=np.float64).reshape(len(want), -1)
            if want64.shape != got64.shape:
                return ParityResult(
                    passed=False,
                    rows=len(want),
                    tolerance=tolerance,
                    detail=f"output {name!r}: Triton returned shape {got64.shape}, "
                    f"the source model {want64.shape}",
                )
            diff = np.abs(got64 - want64)
            error = diff / np.maximum(1.0, np.abs(want64)) if relative else diff
            error = np.where(np.isnan(error), np.inf, error)  # NaN must never pass
            flat = int(np.argmax(error))
            row = flat // want64.shape[1]
            if float(error.flat[flat]) > worst[0]:
                worst = (float(error.flat[flat]), float(diff.flat[flat]), name, row)
        error, abs_diff, name, row = worst
        kind = "relative" if relative else "absolute"
        passed = error <= tolerance
        verdict = "within" if passed else "exceeds"
        return ParityResult(
            passed=passed,
            rows=len(next(iter(expected.values()))),
            max_abs_diff=abs_diff,
            tolerance=tolerance,
            detail=f"output {name!r}: max {kind} difference {error:.3g} {verdict} tolerance "
            f"{tolerance:g} (max abs diff {abs_diff:.3g}, worst row {row})",
        )

    return compare


def topk(
    expected_items: Array,
    expected_scores: Array,
    *,
    items_output: str,
    scores_output: str,
    k: int,
) -> Comparator:
    """Identical top-k item lists per row; tied scores may swap places."""

    def compare(actual: dict[str, Array]) -> ParityResult:
        got_items = actual[items_output][:, :k]
        got_scores = actual[scores_output][:, :k].astype(np.float64)
        want_items = expected_items[:, :k]
        want_scores = expected_scores[:, :k].astype(np.float64)
        rows_ok = np.array(
            [
                _row_matches(gi, gs, wi, ws)
                for gi, gs, wi, ws in zip(
                    got_items, got_scores, want_items, want_scores, strict=True
                )
            ]
        )
        finite = np.isfinite(want_scores) & np.isfinite(got_scores)
        diff = float(np.abs(got_scores - want_scores)[finite].max()) if finite.any() else 0.0
        rate = float(rows_ok.mean()) if len(rows_ok) else 1.0
        detail = f"top-{k} lists identical for {int(rows_ok.sum())}/{len(rows_ok)} users"
        if not rows_ok.all():
            row = int(np.argmin(rows_ok))
            detail += (
                f"; first mismatch at row {row}: Triton {got_items[row][:5].tolist()}..., "
                f"reference {want_items[row][:5].tolist()}..."
            )
        return ParityResult(
            passed=bool(rows_ok.all()),
            rows=len(rows_ok),
            max_abs_diff=diff,
            tolerance=TOPK_SCORE_TOLERANCE,
            topk_match_rate=rate,
            detail=detail,
        )

    return compare


def _row_matches(
    got_items: Array, got_scores: Array, want_items: Array, want_scores: Array
) -> bool:
    both_inf = np.isneginf(got_scores) & np.isneginf(want_scores)
    scale = np.maximum(1.0, np.abs(np.where(both_inf, 0.0, want_scores)))
    close = both_inf | (np.abs(got_scores - want_scores) <= TOPK_SCORE_TOLERANCE * scale)
    if not close.all():
        return False
    # Positions whose score is tied with a neighbour may hold any item of the tie.
    gaps = np.abs(np.diff(np.where(np.isneginf(want_scores), -1e30, want_scores)))
    tied = np.zeros(len(want_scores), dtype=bool)
    tied[:-1] |= gaps <= TOPK_SCORE_TOLERANCE * scale[:-1]
    tied[1:] |= gaps <= TOPK_SCORE_TOLERANCE * scale[1:]
    tied |= np.isneginf(want_scores)
    return bool(np.all((got_items == want_items) | tied))
