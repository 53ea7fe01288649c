"""The ranking stage's entry: DIEN or DIN trained on the features output, exported as the ranking model artifact."""

from __future__ import annotations

from components.kfp_metrics import finite_metrics
from components.ranking.base import ModelConfig
from components.ranking.training import TrainConfig, train_ranker


def run(
    features: str, model: str, model_type: str, epochs: int, seed: int, retrieval_model: str | None = None
) -> dict[str, float]:
    """DIEN or DIN with the paper's defaults; with `retrieval_model` (its artifact folder), trained on retrieval's
    candidates as hard negatives and fused with retrieval's score in the funnel. Returns the finite metrics (KFP
    cannot log NaN; an undefined GAUC, say, stays out)."""
    if model_type not in ("dien", "din"):
        raise ValueError(f"ranking model_type must be 'dien' or 'din', got {model_type!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    result = train_ranker(
        features, model, ModelConfig(model_type=model_type), TrainConfig(epochs=epochs, seed=seed), retrieval_model
    )
    return finite_metrics(result)
