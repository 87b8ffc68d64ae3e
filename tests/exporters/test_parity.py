"""The parity comparison: fair to float32 rounding, strict about everything else."""

from __future__ import annotations

import numpy as np

from exporters import parity


def test_float32_rounding_on_values_near_one_passes_the_default() -> None:
    # LightGBM probabilities measured 1.4e-5 off on values around 1: rounding, not a bug;
    # the small complement (0.01) carries the same error, judged on its row's scale.
    source = np.array([[0.99, 0.01], [0.5, 0.5]], dtype=np.float64)
    served = source + np.array([[-1.4e-5, 1.4e-5], [0.0, 0.0]])
    result = parity.numeric({"probabilities": source})({"probabilities": served})
    assert result.passed, result.detail
    assert result.tolerance == parity.ABSOLUTE_TOLERANCE
    assert result.relative_tolerance == parity.RELATIVE_TOLERANCE
    assert np.isclose(result.max_abs_diff or 0.0, 1.4e-5)


def test_a_real_mismatch_fails_and_says_what_to_do() -> None:
    source = np.array([[0.9, 0.1], [0.2, 0.8]])
    served = source.copy()
    served[1] = [0.3, 0.7]  # a wrong conversion: 0.1 off
    result = parity.numeric({"probabilities": source})({"probabilities": served})
    assert not result.passed
    assert "output 'probabilities'" in result.detail and "at row 1" in result.detail
    assert "--atol" in result.detail and "--rtol" in result.detail


def test_near_zero_values_are_judged_by_the_absolute_bound() -> None:
    source = np.array([[1e-9], [0.0]])
    assert parity.numeric({"y": source})({"y": source + 9e-6}).passed
    assert not parity.numeric({"y": source})({"y": source + 2e-5}).passed


def test_large_values_are_judged_relative_to_their_size() -> None:
    source = np.array([[150.0]])
    assert parity.numeric({"y": source})({"y": source + 5e-3}).passed  # 3.3e-5 relative
    assert not parity.numeric({"y": source})({"y": source + 0.1}).passed


def test_integer_outputs_must_match_exactly() -> None:
    source = np.array([[3], [7]], dtype=np.int64)
    assert parity.numeric({"index": source})({"index": source.copy()}).passed
    off_by_one = parity.numeric({"index": source})({"index": source + np.array([[0], [1]])})
    assert not off_by_one.passed and "at row 1" in off_by_one.detail


def test_nan_never_passes_and_explicit_tolerances_are_recorded() -> None:
    source = np.array([[1.0, 2.0]])
    served = np.array([[1.0, np.nan]])
    assert not parity.numeric({"y": source}, atol=1.0, rtol=1.0)({"y": served}).passed
    strict = parity.numeric({"y": source}, atol=1e-12, rtol=0.0)({"y": source + 1e-9})
    assert not strict.passed
    assert (strict.tolerance, strict.relative_tolerance) == (1e-12, 0.0)
