"""The one bridge between a KFP component function and its stage's entry, which knows nothing of KFP.

Every component body has the same shape: `figures = stage.run(**task_arguments(locals()))`, then
`log_metrics(metrics.log_metric, figures)`. task_arguments turns each artifact into the local path the entry
reads or writes; log_metrics logs the scalar figures.

KFP serialises metrics as protobuf `Value`s, which cannot hold NaN or infinity; an undefined figure
(GAUC when no user has both labels, say) is left out, as the bench JSON leaves it out, instead of
failing the task after its work is done.
"""

from __future__ import annotations

import math
import numbers
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

HTML_SUFFIX = ".html"
ROC_CURVE = "roc_curve"  # figures key: {"fpr": [...], "tpr": [...], "thresholds": [...]}
CONFUSION_MATRIX = "confusion_matrix"  # figures key: {"categories": [...], "matrix": [[...], ...]}
_SINKS = ("system.Metrics", "system.ClassificationMetrics")  # logged into by the shell, never passed on


def task_arguments(arguments: Mapping[str, Any], uris: Iterable[str] = ()) -> dict[str, Any]:
    """A component's `locals()` as its stage entry takes them: each artifact as its path (None stays None), an HTML
    artifact's file named .html (so a browser renders it), metrics artifacts and imported modules left out, and
    `<name>_uri` beside the path for the artifacts named in `uris` (a Model Registry upload needs the gs:// URI).
    Also sets up the stage's progress lines, which is why every component calls it first."""
    from components import progress

    progress.configure()
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        if isinstance(value, types.ModuleType):
            continue
        schema_title = getattr(value, "schema_title", None)
        if schema_title in _SINKS:
            continue
        if schema_title is not None:
            if schema_title == "system.HTML" and not value.uri.endswith(HTML_SUFFIX):
                # KFP records the URI an artifact has when the component returns, and the console renders the
                # HTML artifact from it: the path moves with the URI.
                value.uri += HTML_SUFFIX
            out[name] = value.path
            if name in uris:
                out[f"{name}_uri"] = value.uri
        else:
            out[name] = value
    return out


def finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The values that are finite real numbers, as floats (lists, dicts and strings are not metrics)."""
    return {
        name: float(value)
        for name, value in values.items()
        if isinstance(value, numbers.Real) and math.isfinite(float(value))
    }


def log_metrics(log_metric: Callable[[str, float], None], values: Mapping[str, Any], classification=None) -> None:
    """Calls `log_metric` (e.g. `metrics.log_metric`) for every finite scalar; with a ClassificationMetrics
    artifact, also logs the figures' ROC curve and confusion matrix when they have them."""
    for name, value in finite_metrics(values).items():
        log_metric(name, value)
    if classification is not None and values.get(ROC_CURVE):
        roc = values[ROC_CURVE]
        classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    if classification is not None and values.get(CONFUSION_MATRIX):
        confusion = values[CONFUSION_MATRIX]
        classification.log_confusion_matrix(confusion["categories"], confusion["matrix"])
