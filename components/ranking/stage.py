"""The ranking stage's entry: DIEN or DIN trained on the features output, exported as the ranking model artifact."""

from __future__ import annotations

from pathlib import Path

from components.kfp_metrics import finite_metrics
from components.ranking.base import ModelConfig
from components.ranking.training import TrainConfig, train_ranker


def run(
    features: str,
    model: str,
    model_type: str,
    epochs: int,
    seed: int,
    retrieval_model: str | None = None,
    warm_start: bool = False,
    registry_dir: str = "",
    warm_start_epochs: int = 4,
    parent_dir: str | Path | None = None,
    parent_version: str = "",
) -> dict[str, float]:
    """DIEN or DIN with the paper's defaults; with `retrieval_model` (its artifact folder), trained on retrieval's
    candidates as hard negatives and fused with retrieval's score in the funnel. `warm_start` starts from the last
    blessed ranker in `registry_dir` when it is a `model_type` (or from `parent_dir`, a ranking artifact), items by
    id, for at most min(epochs, warm_start_epochs) (components.ranking.warm_start); without one it trains from
    scratch. Returns the finite metrics (KFP cannot log NaN; an undefined GAUC, say, stays out)."""
    from components.ranking import warm_start as warm

    if model_type not in ("dien", "din"):
        raise ValueError(f"ranking model_type must be 'dien' or 'din', got {model_type!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if warm_start and parent_dir is None:
        parent_dir, parent_version = warm.parent_of(registry_dir, model_type)
    parent = warm.Parent.load(parent_dir, parent_version) if parent_dir else None
    if parent is not None and warm_start:
        epochs = min(epochs, warm_start_epochs)
    result = train_ranker(
        features,
        model,
        ModelConfig(model_type=model_type),
        TrainConfig(epochs=epochs, seed=seed),
        retrieval_model,
        parent,
    )
    return finite_metrics(result)
