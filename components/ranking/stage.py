"""The ranking stage's entry: DIEN or DIN trained on the features output, exported as the ranking model artifact."""

from __future__ import annotations

from pathlib import Path

from components import schema
from components.kfp_metrics import finite_metrics
from components.ranking.base import ModelConfig
from components.ranking.training import TrainConfig, evaluation_split, fit_and_measure, training_set, write_artifact


def run(
    features: str,
    model: str,
    model_type: str,
    epochs: int,
    seed: int,
    retrieval_model: str | None = None,
    warm_start: bool = False,
    registry_dir: str = "",
    warm_start_epochs: int = 2,
    parent_dir: str | Path | None = None,
    parent_version: str = "",
    warm_replay: float | None = None,
    train_input: str = "auto",
    refit_epochs: int = TrainConfig.refit_epochs,
) -> dict[str, float]:
    """DIEN or DIN with the paper's defaults; with `retrieval_model` (its artifact folder), trained on retrieval's
    candidates as hard negatives and fused with retrieval's score in the funnel. `warm_start` starts from the last
    blessed ranker in `registry_dir` when it is a `model_type` (or from `parent_dir`, a ranking artifact), items by
    id, for at most min(epochs, warm_start_epochs) (components.ranking.warm_start) over the rows the parent did not
    train on plus `warm_replay` (None: warm_start.WARM_REPLAY) of the ones it did; without one it trains from
    scratch. The model selected on valid is then refit through valid for `refit_epochs` (TrainConfig.refit_epochs; the
    fusion weight is chosen with the selected one). The artifact's weights.npz records the keys of every row trained
    on (tomorrow's parent's). Returns the finite metrics (KFP cannot log NaN; an undefined GAUC, say, stays out).
    `train_input`: the train split in memory or streamed from user buckets, and valid and test in memory or scored a
    chunk at a time (TrainConfig.train_input)."""
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
    model_config, train_config = (
        ModelConfig(model_type=model_type),
        TrainConfig(epochs=epochs, seed=seed, train_input=train_input, refit_epochs=refit_epochs),
    )
    spec = schema.FeatureSpec.read(features)
    valid, test = (evaluation_split(features, split, train_config) for split in ("valid", "test"))
    train_set = training_set(features, train_config, retrieval_model, valid=valid)
    replay = warm.WARM_REPLAY if warm_replay is None else warm_replay
    train_set, keys, replayed = warm.warm_training_set(train_set, features, parent, replay, seed)
    warm_args = (parent, features) if parent is not None else None
    fitted = fit_and_measure(model_config, train_config, spec, train_set, valid, test, warm_args)
    result = fitted.metrics
    carried = result.pop("warm_start", None)
    if carried is not None:
        carried.update(replayed)
    keys = warm.trained_keys(features, keys, train_set)
    write_artifact(
        fitted.model, features, model, spec, train_config, retrieval_model, result, carried, keys, fitted.selected
    )
    return finite_metrics(result)
