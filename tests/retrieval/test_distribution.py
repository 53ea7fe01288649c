"""Retrieval's training under MirroredStrategy (RECSYS_DISTRIBUTION=mirrored, what a GPU trainer task sets): here
one replica on the CPU. Its variables are mirrored and it learns what the default strategy learns from the seed."""

import numpy as np
import pytest

from components import distribution


def train_once(shop_features):
    from components.retrieval import training
    from components.retrieval.config import RetrievalConfig
    from components.retrieval.data import load_catalogue, load_examples

    config = RetrievalConfig(embedding_dim=16, max_len=10, batch_size=128, epochs=1, patience=1, seed=3)
    return training.train(
        load_examples(shop_features, "train", 10),
        load_examples(shop_features, "valid", 10),
        load_catalogue(shop_features),
        config,
    )


def test_mirrored_strategy_trains_with_one_replica_on_cpu(shop_features, monkeypatch):
    import tensorflow as tf

    default = train_once(shop_features)
    monkeypatch.setenv(distribution.ENV, "mirrored")
    mirrored = train_once(shop_features)
    strategy = mirrored.model.distribute_strategy
    assert isinstance(strategy, tf.distribute.MirroredStrategy) and strategy.num_replicas_in_sync == 1
    assert not isinstance(default.model.distribute_strategy, tf.distribute.MirroredStrategy)
    assert all(type(v).__name__ == "MirroredVariable" for v in mirrored.model.trainable_variables)
    for name, value in default.valid_metrics.items():
        assert mirrored.valid_metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
    assert np.isfinite(mirrored.history[0]["loss"])


def test_unknown_strategy_is_refused(monkeypatch):
    monkeypatch.setenv(distribution.ENV, "tpu")
    with pytest.raises(ValueError, match="RECSYS_DISTRIBUTION='tpu'"):
        distribution.strategy()
    monkeypatch.delenv(distribution.ENV)
    assert distribution.strategy_name() == "default"
