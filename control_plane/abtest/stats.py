"""Two-proportion z-test, written out so it can be checked against a reference.

Pooled standard error for the test statistic (H0: equal rates); unpooled
standard error for the 95% confidence interval of the difference (Wald).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class ProportionTest:
    difference: float  # variant rate - control rate
    z: float | None
    p_value: float | None
    ci_low: float | None
    ci_high: float | None


def two_proportion_z_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> ProportionTest:
    """Compare rate A (variant) against rate B (control); None where undefined."""
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


def rate(successes: int, trials: int) -> float:
    return successes / trials if trials else 0.0


def lift(variant: float, control: float) -> float | None:
    return (variant - control) / control if control else None
