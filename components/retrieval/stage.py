"""The retrieval stage end to end: features output in, model artifact out, valid metrics back."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from components.retrieval import export
from components.retrieval.config import RetrievalConfig
from components.retrieval.training import train_from_features

log = logging.getLogger(__name__)


def run(features: str | Path, model: str | Path, **settings) -> dict[str, float]:
    """Trains with the shipped defaults overridden by `settings` (RetrievalConfig fields), exports the
    artifact to `model`, and returns the selected epoch's valid metrics plus training figures."""
    config = dataclasses.replace(RetrievalConfig(), **settings)
    result = train_from_features(features, config)
    export.export(result.model, result.catalogue, config, model, history=result.history)
    log.info("retrieval model written to %s", model)
    return {
        **{f"valid_{name}": value for name, value in result.valid_metrics.items()},
        "best_epoch": float(result.best_epoch),
        "train_s": result.train_s,
        "train_examples_per_s": result.train_examples_per_s,
    }
