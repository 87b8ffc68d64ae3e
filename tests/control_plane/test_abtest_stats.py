"""The A/B formulas against independent references (scipy, numerical integration, brute force)."""

from __future__ import annotations

import itertools
import math

import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from control_plane.abtest import stats

# (successes, trials) of variant and control: balanced, unbalanced, rare, negative effects.
CASES = [
    (130, 1000, 100, 1000),
    (12, 400, 30, 1600),
    (3, 5000, 9, 5000),
    (520, 900, 480, 910),
    (45, 150, 20, 300),
]


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), CASES)
def test_z_test_p_value_matches_scipy_chi_square(x1: int, n1: int, x2: int, n2: int) -> None:
    # The pooled two-proportion z-test is Pearson's chi-square on the 2x2 table (z^2 = chi^2).
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    chi2, p_value, _, _ = scipy_stats.chi2_contingency(table, correction=False)
    result = stats.two_proportion_z_test(x1, n1, x2, n2)
    assert result.z is not None and result.p_value is not None
    assert result.z**2 == pytest.approx(chi2, rel=1e-9)
    assert math.copysign(1, result.z) == math.copysign(1, x1 / n1 - x2 / n2)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), CASES)
def test_wald_interval_matches_scipy_normal_quantile(x1: int, n1: int, x2: int, n2: int) -> None:
    p1, p2 = x1 / n1, x2 / n2
    low, high = scipy_stats.norm.interval(
        0.95, loc=p1 - p2, scale=math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    )
    result = stats.two_proportion_z_test(x1, n1, x2, n2)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))


N1, N2 = 1200, 800
N_EFF = 1 / (1 / N1 + 1 / N2)


def _mixture_ratio(difference: float, variance: float, theta0: float) -> float:
    """Normal likelihood ratio of theta against theta0, averaged over the mixture prior
    N(theta0, MIXING_VARIANCE * per-impression variance), integrated numerically: the
    definition the closed form must agree with."""
    prior_sd = math.sqrt(stats.MIXING_VARIANCE * variance * N_EFF)
    sd = math.sqrt(variance)

    def integrand(theta: float) -> float:
        log_ratio = scipy_stats.norm.logpdf(difference, theta, sd) - scipy_stats.norm.logpdf(
            difference, theta0, sd
        )
        return float(math.exp(log_ratio) * scipy_stats.norm.pdf(theta, theta0, prior_sd))

    value, _ = integrate.quad(integrand, theta0 - 12 * prior_sd, theta0 + 12 * prior_sd)
    return float(value)


@pytest.mark.parametrize(("x1", "x2"), [(150, 80), (130, 90), (120, 80), (90, 100)])
def test_always_valid_p_value_is_the_inverse_mixture_ratio(x1: int, x2: int) -> None:
    n1, n2 = N1, N2
    pooled = (x1 + x2) / (n1 + n2)
    pooled_variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    ratio = _mixture_ratio(x1 / n1 - x2 / n2, pooled_variance, 0.0)
    result = stats.always_valid_test(x1, n1, x2, n2, alpha=0.05)
    assert result.p_value == pytest.approx(min(1.0, 1 / ratio), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_confidence_sequence_ends_where_the_mixture_ratio_reaches_one_over_alpha(
    alpha: float,
) -> None:
    # The sequence is {theta0 : ratio(theta0) < 1/alpha}; the ratio grows away from the
    # observed difference, so it is an interval whose ends are where the ratio is 1/alpha.
    x1, x2, n1, n2 = 150, 80, N1, N2
    p1, p2 = x1 / n1, x2 / n2
    variance = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    result = stats.always_valid_test(x1, n1, x2, n2, alpha=alpha)
    assert result.cs_low is not None and result.cs_high is not None
    for end in (result.cs_low, result.cs_high):
        assert _mixture_ratio(p1 - p2, variance, end) == pytest.approx(1 / alpha, rel=1e-6)
    inside = (result.cs_low + result.cs_high) / 2
    assert _mixture_ratio(p1 - p2, variance, inside) < 1 / alpha


def _holm_by_closed_testing(p_values: list[float]) -> list[float]:
    """Holm is closed testing with Bonferroni local tests: the adjusted p of H_i is the
    largest Bonferroni p over every intersection hypothesis that contains H_i."""
    m = len(p_values)
    adjusted = []
    for i in range(m):
        worst = 0.0
        for size in range(1, m + 1):
            for subset in itertools.combinations(range(m), size):
                if i in subset:
                    worst = max(worst, min(1.0, size * min(p_values[j] for j in subset)))
        adjusted.append(worst)
    return adjusted


@pytest.mark.parametrize(
    "p_values",
    [[0.01, 0.04, 0.03], [0.2, 0.001, 0.5, 0.012], [0.04], [0.3, 0.3, 0.3], [0.6, 0.02]],
)
def test_holm_matches_closed_testing(p_values: list[float]) -> None:
    assert stats.holm(p_values) == pytest.approx(_holm_by_closed_testing(p_values))
    assert stats.holm([]) == []


def test_impossible_counts_are_refused_not_rooted() -> None:
    with pytest.raises(ValueError, match="not a proportion"):
        stats.two_proportion_z_test(3, 1, 0, 1)
    with pytest.raises(ValueError, match="not a proportion"):
        stats.always_valid_test(0, 10, 11, 10, alpha=0.05)


def test_rates_without_trials_are_undefined() -> None:
    assert stats.rate(0, 0) is None and stats.rate(0, 10) == 0.0
    assert stats.lift(0.2, None) is None and stats.lift(0.2, 0.0) is None
    assert stats.lift(0.12, 0.1) == pytest.approx(0.2)
    empty = stats.always_valid_test(0, 0, 5, 10, alpha=0.05)
    assert (empty.p_value, empty.cs_low, empty.cs_high) == (None, None, None)


def test_the_smallest_alpha_a_query_can_send_keeps_the_sequence_finite() -> None:
    result = stats.always_valid_test(150, 1200, 80, 800, alpha=5e-324)
    assert result.cs_low is not None and result.cs_high is not None
    assert math.isfinite(result.cs_low) and math.isfinite(result.cs_high)
