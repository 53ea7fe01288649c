import math

import numpy as np
import pytest

from components.experiments import stats


@pytest.mark.parametrize(
    "statistic, df, p",
    [
        (3.841458820694124, 1, 0.05),
        (6.634896601021214, 1, 0.01),
        (30.14352720564616, 19, 0.05),
        (2.0, 2, math.exp(-1.0)),
        (0.5, 3, 0.9188914116),
    ],
)
def test_chi2_sf_matches_tables(statistic, df, p):
    assert stats.chi2_sf(statistic, df) == pytest.approx(p, rel=1e-6)


def test_normal_quantile_inverts_sf():
    assert stats.normal_quantile(0.975) == pytest.approx(1.959963985, abs=1e-8)
    assert stats.normal_sf(1.959963985) == pytest.approx(0.025, abs=1e-9)


def test_goodness_of_fit_by_hand():
    statistic, p = stats.chi2_goodness_of_fit(np.array([60, 40]), np.array([0.5, 0.5]))
    assert statistic == pytest.approx(4.0)  # (10^2 + 10^2) / 50
    assert p == pytest.approx(math.erfc(math.sqrt(2.0)), rel=1e-9)


def test_independence_by_hand():
    statistic, _ = stats.chi2_independence(np.array([[10, 20], [20, 10]]))
    assert statistic == pytest.approx(4 * 25 / 15)


def test_bad_shares_raise():
    with pytest.raises(ValueError, match="expected shares"):
        stats.chi2_goodness_of_fit(np.array([1, 2]), np.array([0.5, 0.6]))
