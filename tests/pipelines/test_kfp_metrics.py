import math

from components.kfp_metrics import finite_metrics, log_metrics


def test_undefined_figures_are_left_out():
    logged = {}
    log_metrics(logged.__setitem__, {"auc": 0.7, "gauc": math.nan, "loss": math.inf, "n": 3})
    assert logged == {"auc": 0.7, "n": 3.0}
    assert finite_metrics({"x": -math.inf}) == {}
