"""Logs stage figures on a KFP `Metrics` artifact.

KFP serialises metrics as protobuf `Value`s, which cannot hold NaN or infinity; an undefined figure
(GAUC when no user has both labels, say) is left out, as the bench JSON leaves it out, instead of
failing the task after its work is done.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping


def finite_metrics(values: Mapping[str, float]) -> dict[str, float]:
    """The values that are finite numbers, as floats."""
    return {name: float(value) for name, value in values.items() if math.isfinite(float(value))}


def log_metrics(log_metric: Callable[[str, float], None], values: Mapping[str, float]) -> None:
    """Calls `log_metric` (e.g. `metrics.log_metric`) for every finite value."""
    for name, value in finite_metrics(values).items():
        log_metric(name, value)
