"""RetrievalConfig.lr_schedule: the learning rate per gradient step, in training, and in an older artifact's config."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from components import schema
from components.retrieval import training
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import load_catalogue, load_examples


def test_constant_is_the_configured_rate():
    assert training.learning_rate(RetrievalConfig(learning_rate=3e-3), 100) == 3e-3


def test_cosine_falls_from_the_rate_to_zero_over_the_steps():
    schedule = training.learning_rate(RetrievalConfig(learning_rate=2e-3, lr_schedule="cosine"), 200)
    for step, expected in ((0, 2e-3), (50, 1e-3 * (1 + math.cos(math.pi / 4))), (100, 1e-3), (200, 0.0), (300, 0.0)):
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-9), step


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        RetrievalConfig(lr_schedule="step")


def test_training_follows_the_schedule(shop_features):
    """After training, the optimizer's rate is the cosine's at the steps it took, of the epochs cap's steps."""
    config = RetrievalConfig(
        encoder="mean", embedding_dim=16, max_len=10, batch_size=64, epochs=3, patience=3, lr_schedule="cosine"
    )
    catalogue = load_catalogue(shop_features)
    train = load_examples(shop_features, "train", config.max_len)
    valid = load_examples(shop_features, "valid", config.max_len)
    result = training.train(train, valid, catalogue, config)
    optimizer = result.model.optimizer
    steps = int(optimizer.iterations.numpy())
    batches = len(train) // config.batch_size
    assert steps == batches * result.epochs_run
    # the rate of the last step taken (the optimizer evaluates the schedule before it counts the step)
    last = 0.5 * config.learning_rate * (1 + math.cos(math.pi * (steps - 1) / (batches * config.epochs)))
    assert float(optimizer.learning_rate) == pytest.approx(last, rel=1e-4, abs=1e-9)
    assert float(optimizer.learning_rate) < 0.2 * config.learning_rate  # well down the cosine after 3 of 3 epochs
    constant = training.train(train, valid, catalogue, dataclasses.replace(config, lr_schedule="constant", epochs=1))
    assert float(constant.model.optimizer.learning_rate) == pytest.approx(config.learning_rate)


def test_an_older_config_without_the_field_reads_as_constant(tmp_path):
    RetrievalConfig(lr_schedule="cosine").write(tmp_path)
    path = tmp_path / schema.RETRIEVAL_CONFIG_FILE
    payload = json.loads(path.read_text())
    del payload["lr_schedule"]
    path.write_text(json.dumps(payload))
    assert RetrievalConfig.read(tmp_path).lr_schedule == "constant"
    assert np.isclose(RetrievalConfig.read(tmp_path).learning_rate, RetrievalConfig().learning_rate)
