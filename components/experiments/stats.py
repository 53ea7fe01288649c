"""The few test statistics the experiments need (the project does not depend on SciPy).

chi2_sf uses the regularised upper incomplete gamma function Q(df/2, x/2), computed by its power series
below a+1 and by Lentz's continued fraction above (Numerical Recipes, 6.2): both converge to 1e-14 in
well under 200 terms for the df and statistics seen here.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-15
_MAX_TERMS = 1000


def _lower_gamma_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    denom = a
    for _ in range(_MAX_TERMS):
        denom += 1.0
        term *= x / denom
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _upper_gamma_fraction(a: float, x: float) -> float:
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square(df)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if statistic <= 0:
        return 1.0
    a, x = df / 2.0, statistic / 2.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _lower_gamma_series(a, x))
    return min(1.0, _upper_gamma_fraction(a, x))


def normal_sf(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_quantile(p: float) -> float:
    """z with P(Z <= z) = p, by bisection on erfc (exact to 1e-12; only called a few times)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        if 1.0 - normal_sf(mid) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def chi2_goodness_of_fit(observed: np.ndarray, expected_share: np.ndarray) -> tuple[float, float]:
    """Pearson's statistic and p-value of observed counts against expected shares (sample-ratio mismatch)."""
    observed = np.asarray(observed, dtype=np.float64)
    share = np.asarray(expected_share, dtype=np.float64)
    if observed.shape != share.shape or observed.size < 2:
        raise ValueError("need at least two cells, with one expected share per observed count")
    if np.any(share <= 0) or not math.isclose(share.sum(), 1.0, rel_tol=1e-9):
        raise ValueError(f"expected shares must be positive and sum to 1, got {share.tolist()}")
    expected = share * observed.sum()
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, chi2_sf(statistic, observed.size - 1)


def chi2_independence(table: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square test of independence on an r x c contingency table (no continuity correction)."""
    table = np.asarray(table, dtype=np.float64)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    if np.any(expected == 0):
        raise ValueError("a row or column of the contingency table is empty")
    statistic = float(np.sum((table - expected) ** 2 / expected))
    df = (table.shape[0] - 1) * (table.shape[1] - 1)
    return statistic, chi2_sf(statistic, df)
