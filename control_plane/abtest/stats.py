"""A/B statistics for proportions, written out so each can be checked against a reference.

- Fixed horizon: the two-proportion z-test (pooled standard error under H0: equal
  rates) and the Wald 95% interval of the difference (unpooled standard error).
  Valid when the sample size is fixed in advance and the result is read once.
- Always valid: the mixture sequential probability ratio test (mSPRT) of Johari,
  Koomen, Pekelis and Walsh ("Always valid inference", 2022) on the same normal
  approximation, and the confidence sequence it inverts to (Robbins' normal
  mixture, as in Howard et al. 2021). Their guarantee holds at every sample size
  at once, so results may be read daily and acted on at any time.
- Holm-Bonferroni: several variants against one control.

docs/AB_TESTING.md derives each formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # two-sided 95% normal quantile

# The mixture's prior on the standardized effect (difference / per-impression sd) is
# N(0, MIXING_VARIANCE). It must be fixed before the data are seen; this value makes the
# boundary tightest near TUNED_FOR_IMPRESSIONS per slot at alpha 0.05 (the usual tuning
# of the normal mixture, (2 log(1/alpha) + log(1 + 2 log(1/alpha))) / m with m the
# effective sample size there, n/2 for two slots of n; Waudby-Smith et al. 2021), and the
# boundary grows only like sqrt(log n) away from it.
TUNED_FOR_IMPRESSIONS = 10_000
_LOG_20 = math.log(20)
MIXING_VARIANCE = (2 * _LOG_20 + math.log(1 + 2 * _LOG_20)) / (TUNED_FOR_IMPRESSIONS / 2)


@dataclass(frozen=True)
class ProportionTest:
    difference: float  # variant rate - control rate
    z: float | None
    p_value: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class SequentialTest:
    p_value: float | None  # always valid: P(p_n <= alpha for some n | H0) <= alpha
    cs_low: float | None  # (1 - alpha) confidence sequence of the difference
    cs_high: float | None


def _check(successes: int, trials: int) -> None:
    if not 0 <= successes <= trials:
        raise ValueError(f"not a proportion: {successes} successes in {trials} trials")


def two_proportion_z_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> ProportionTest:
    """Compare rate A (variant) against rate B (control); None where undefined."""
    _check(successes_a, trials_a)
    _check(successes_b, trials_b)
    if trials_a == 0 or trials_b == 0:
        return ProportionTest(0.0, None, None, None, None)
    rate_a = successes_a / trials_a
    rate_b = successes_b / trials_b
    difference = rate_a - rate_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    se = math.sqrt(rate_a * (1 - rate_a) / trials_a + rate_b * (1 - rate_b) / trials_b)
    if pooled_se == 0:
        return ProportionTest(
            difference, None, None, difference - Z_95 * se, difference + Z_95 * se
        )
    z = difference / pooled_se
    p_value = math.erfc(abs(z) / math.sqrt(2))  # two-sided
    return ProportionTest(difference, z, p_value, difference - Z_95 * se, difference + Z_95 * se)


def always_valid_test(
    successes_a: int,
    trials_a: int,
    successes_b: int,
    trials_b: int,
    *,
    alpha: float,
    mixing_variance: float = MIXING_VARIANCE,
) -> SequentialTest:
    """mSPRT p-value for H0: equal rates, and the confidence sequence of A - B.

    With n_eff = 1 / (1/n_a + 1/n_b) and u = mixing_variance * n_eff, the mixture
    likelihood ratio against H0 is (1 + u)^(-1/2) * exp(z^2 u / (2 (1 + u))), z the
    pooled z statistic; the p-value is min(1, 1 / ratio). Ville's inequality bounds
    the chance that the ratio ever reaches 1/alpha under H0 by alpha.
    """
    _check(successes_a, trials_a)
    _check(successes_b, trials_b)
    if trials_a == 0 or trials_b == 0:
        return SequentialTest(None, None, None)
    u = mixing_variance / (1 / trials_a + 1 / trials_b)
    shrink = (1 + u) / u
    rate_a, rate_b = successes_a / trials_a, successes_b / trials_b
    difference = rate_a - rate_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    pooled_variance = pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b)
    p_value = None
    if pooled_variance > 0:
        z_squared = difference**2 / pooled_variance
        log_ratio = z_squared / (2 * shrink) - 0.5 * math.log1p(u)
        p_value = math.exp(-max(log_ratio, 0.0))
    variance = rate_a * (1 - rate_a) / trials_a + rate_b * (1 - rate_b) / trials_b
    if variance == 0:  # no spread observed: the normal approximation says nothing
        return SequentialTest(p_value, None, None)
    # -log(alpha), not log(1/alpha): 1/alpha overflows for the tiniest floats a query may send.
    half_width = math.sqrt(variance * shrink * (-2 * math.log(alpha) + math.log1p(u)))
    return SequentialTest(p_value, difference - half_width, difference + half_width)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (FWER control, any dependence)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def rate(successes: int, trials: int) -> float | None:
    """None without trials: no impressions is no evidence, not a rate of 0."""
    return successes / trials if trials else None


def lift(variant: float | None, control: float | None) -> float | None:
    if variant is None or not control:
        return None
    return (variant - control) / control
