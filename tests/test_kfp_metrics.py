"""kfp_metrics: the bridge from a component's arguments to its stage entry, and from its figures to KFP metrics."""

import math
import types

from kfp import dsl

from components.kfp_metrics import finite_metrics, log_metrics, task_arguments


def test_undefined_figures_are_left_out():
    logged = {}
    log_metrics(logged.__setitem__, {"auc": 0.7, "gauc": math.nan, "loss": math.inf, "n": 3, "curve": [1, 2]})
    assert logged == {"auc": 0.7, "n": 3.0}
    assert finite_metrics({"x": -math.inf, "name": "dien"}) == {}


def test_classification_figures_reach_a_classification_artifact():
    classification = dsl.ClassificationMetrics(name="c", uri="/tmp/c")
    figures = {
        "auc": 0.5,
        "roc_curve": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "thresholds": [1.0, 0.0]},
        "confusion_matrix": {"categories": ["no", "yes"], "matrix": [[1, 0], [0, 1]]},
    }
    log_metrics({}.__setitem__, figures, classification)
    assert classification.metadata["confidenceMetrics"] and classification.metadata["confusionMatrix"]


def test_task_arguments_pass_paths_and_values_and_drop_sinks_and_modules():
    model = dsl.Model(name="m", uri="gs://bucket/run/model")
    report = dsl.HTML(name="r", uri="gs://bucket/run/report")
    arguments = {
        "model": model,
        "report": report,
        "metrics": dsl.Metrics(name="x", uri="gs://bucket/run/metrics"),
        "features": None,
        "epochs": 3,
        "stage": types.ModuleType("stage"),
    }
    out = task_arguments(arguments, uris=("model",))
    assert out == {
        "model": model.path,
        "model_uri": "gs://bucket/run/model",
        "report": report.path,
        "features": None,
        "epochs": 3,
    }
    assert report.uri.endswith(".html") and out["report"].endswith("report.html")
