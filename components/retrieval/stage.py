"""The retrieval stage end to end: features output in, model artifact out, valid metrics back."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from components.retrieval import export
from components.retrieval.config import RetrievalConfig
from components.retrieval.training import train_from_features

log = logging.getLogger(__name__)


def run(
    features: str | Path,
    model: str | Path,
    warm_start: bool = False,
    registry_dir: str = "",
    warm_start_epochs: int = 2,
    parent_dir: str | Path | None = None,
    parent_version: str = "",
    **settings,
) -> dict[str, float]:
    """Trains with the shipped defaults overridden by `settings` (RetrievalConfig fields), exports the
    artifact to `model`, and returns the selected epoch's valid metrics plus training figures.
    `warm_start` starts from the last blessed model in `registry_dir` (or from `parent_dir`, a retrieval artifact)
    for at most `warm_start_epochs` (components.retrieval.warm_start); without one it trains from scratch."""
    from components.retrieval import warm_start as warm

    if warm_start and parent_dir is None:
        parent_dir, parent_version = warm.parent_of(registry_dir, dataclasses.replace(RetrievalConfig(), **settings))
    if parent_dir is not None and warm_start:
        settings["epochs"] = warm_start_epochs
    config = dataclasses.replace(RetrievalConfig(), **settings)
    parent = warm.Parent.load(parent_dir, parent_version) if parent_dir else None
    result = train_from_features(features, config, parent)
    export.export(
        result.model,
        result.catalogue,
        config,
        model,
        history=result.history,
        warm_start=result.warm_start,
        train_keys=result.train_keys,
        selected=result.selected,
    )
    log.info("retrieval model written to %s", model)
    return {
        **{f"valid_{name}": value for name, value in result.valid_metrics.items()},
        "best_epoch": float(result.best_epoch),
        "train_s": result.train_s,
        "train_examples_per_s": result.train_examples_per_s,
        **({"refit_s": result.refit["train_s"]} if result.refit else {}),
    }
