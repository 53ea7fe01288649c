"""The ranker's training under MirroredStrategy (RECSYS_DISTRIBUTION=mirrored, what a multi-GPU trainer task sets):
here one replica on the CPU. The stage's whole path (the train split and the refit streamed, valid and test chunked,
the export) runs with mirrored variables and learns what the default strategy learns from the seed."""

from __future__ import annotations

import pytest
import tensorflow as tf

from components import distribution
from components.ranking import stage
from components.ranking.base import ModelConfig
from components.ranking.training import build_model, create_variables


def _stage(features, out):
    return stage.run(str(features), str(out), "din", 1, 0, train_input="stream", refit_epochs=1)


def test_the_ranker_trains_under_mirrored_strategy_with_one_replica_on_cpu(drifting_features, tmp_path, monkeypatch):
    default = _stage(drifting_features, tmp_path / "default")
    monkeypatch.setenv(distribution.ENV, "mirrored")
    model = build_model(ModelConfig(model_type="din"), 10, 4)
    create_variables(model)
    strategy = model.distribute_strategy
    assert isinstance(strategy, tf.distribute.MirroredStrategy) and strategy.num_replicas_in_sync == 1
    assert all(type(v).__name__ == "MirroredVariable" for v in model.trainable_variables)
    mirrored = _stage(drifting_features, tmp_path / "mirrored")
    for name in ("auc", "gauc", "logloss", "valid_auc", "refit_valid_rows"):
        assert mirrored[name] == pytest.approx(default[name], rel=1e-3, abs=1e-4), name
