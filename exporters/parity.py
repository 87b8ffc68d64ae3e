"""Compare what Triton returned with what the source framework predicted.

Default tolerances, and why: every float output value passes where
|triton - source| <= atol + rtol * scale, with atol = 1e-5, rtol = 1e-4 and
scale the largest |source| value in its row. That is numpy.isclose, except that
the scale is the row's: float32 rounding grows with the values being summed,
not with the result, and a probability's complement (1 - p, or the small
classes of a softmax) carries the rounding error of the large ones.
- rtol 1e-4: float32 keeps ~7 significant digits (eps 1.2e-7); a tree ensemble
  sums hundreds of float32 leaf values and a network layer hundreds of products,
  each rounding once, so a faithful conversion lands within a few hundred ulp
  (~1e-5 relative). Measured: LightGBM probabilities 1.4e-5 off on rows whose
  largest value is ~1, LightGBM regression ~5e-5 on values ~150. 1e-4 leaves
  room for that and still refuses a wrong conversion, off by 1e-2 or more.
- atol 1e-5: for rows whose values are all near zero, where a relative bound
  means nothing; 1e-5 is below anything a caller would read as another answer.
- integer outputs (INT32/INT64: indices, labels) must be identical.
- recommenders: the top-K item lists must be identical, except that items with
  tied scores (within 1e-5 relative) may come in either order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from conch_manifest.schema import ParityResult
from exporters.arrays import Array

ABSOLUTE_TOLERANCE = 1e-5
RELATIVE_TOLERANCE = 1e-4
TOPK_SCORE_TOLERANCE = 1e-5
# What a parity failure tells the user to do (the `conch export` options).
TOLERANCE_HINT = (
    "; if the model is right and only float32 rounding differs, "
    "raise --atol or --rtol (a value passes where |triton - source| <= atol + rtol * "
    "the largest |source| in its row)"
)

Comparator = Callable[[dict[str, Array]], ParityResult]


def numeric(
    expected: dict[str, Array],
    atol: float | None = None,
    rtol: float | None = None,
) -> Comparator:
    """Every float output within atol + rtol * its row's largest |expected| (defaults
    above); integer outputs exact."""
    absolute = ABSOLUTE_TOLERANCE if atol is None else atol
    relative = RELATIVE_TOLERANCE if rtol is None else rtol

    def compare(actual: dict[str, Array]) -> ParityResult:
        # worst: (diff / allowed, abs diff, allowed, output, row); passing means ratio <= 1
        worst: tuple[float, float, float, str, int] = (-1.0, 0.0, 0.0, "", 0)
        rows = len(next(iter(expected.values())))
        for name, want in expected.items():
            exact = np.issubdtype(np.asarray(want).dtype, np.integer)
            want64 = np.asarray(want, dtype=np.float64).reshape(len(want), -1)
            got64 = np.asarray(actual[name], dtype=np.float64).reshape(len(want), -1)
            if want64.shape != got64.shape:
                return ParityResult(
                    passed=False,
                    rows=rows,
                    tolerance=absolute,
                    relative_tolerance=relative,
                    detail=f"output {name!r}: Triton returned shape {got64.shape}, "
                    f"the source model {want64.shape}",
                )
            diff = np.abs(got64 - want64)
            scale = np.abs(want64).max(axis=1, keepdims=True, initial=0.0)
            bound = 0.0 if exact else absolute + relative * scale
            allowed = np.broadcast_to(bound, diff.shape)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(diff == 0, 0.0, diff / allowed)
            ratio = np.where(np.isnan(ratio), np.inf, ratio)  # NaN must never pass
            flat = int(np.argmax(ratio))
            if float(ratio.flat[flat]) > worst[0]:
                worst = (
                    float(ratio.flat[flat]),
                    float(diff.flat[flat]),
                    float(allowed.flat[flat]),
                    name,
                    flat // want64.shape[1],
                )
        worst_ratio, abs_diff, allowed_there, name, row = worst
        passed = worst_ratio <= 1.0
        verdict = "within" if passed else "exceeds"
        return ParityResult(
            passed=passed,
            rows=rows,
            max_abs_diff=abs_diff,
            tolerance=absolute,
            relative_tolerance=relative,
            detail=f"output {name!r}: worst difference {abs_diff:.3g} at row {row} {verdict} "
            f"atol {absolute:g} + rtol {relative:g} * row scale = {allowed_there:.3g} there"
            + ("" if passed else TOLERANCE_HINT),
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
