"""Training, timing, prediction and test metrics of one ranking model."""
from __future__ import annotations

import dataclasses
import statistics
import time

import components  # noqa: F401
import numpy as np
import tensorflow as tf

from components import metrics, schema
from components.ranking.base import ModelConfig, SequenceRanker
from components.ranking.data import (RankingData, bucketed_dataset, epoch_plan, load_split, planned_dataset,
                                     rows_in_order)
from components.ranking.dien import DIEN
from components.ranking.din import DIN
from components.ranking.export import export_ranker
from components.ranking.reference_gru import ReferenceGRU

MODELS = {"dien": DIEN, "din": DIN, "reference_gru": ReferenceGRU}
WARMUP_BATCHES = 20  # left out of throughput: graph tracing and retracing for new batch shapes


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0


def build_model(config: ModelConfig, num_items: int, num_categories: int, learning_rate: float) -> SequenceRanker:
    model = MODELS[config.model_type](num_items, num_categories, config)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    return model


class _Clock(tf.keras.callbacks.Callback):
    """Seconds from the end of batch `skip` to the end of training."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip, self.batches, self.start, self.seconds = skip, 0, None, float("nan")

    def on_train_begin(self, logs=None):
        if self.skip == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.skip:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def train(model: SequenceRanker, data: RankingData, config: TrainConfig) -> dict:
    """Fits the model; returns train_s (wall clock) and train_examples_per_s (after the warm-up batches)."""
    first_epoch = epoch_plan(data, config.batch_size, config.seed, 0)
    skip = min(WARMUP_BATCHES, len(first_epoch) - 1)
    timed_examples = data.size * config.epochs - sum(len(rows) for rows in first_epoch[:skip])
    clock = _Clock(skip)
    start = time.perf_counter()
    model.fit(bucketed_dataset(data, config.batch_size, seed=config.seed), epochs=config.epochs, verbose=0,
              callbacks=[clock])
    return {"train_s": time.perf_counter() - start, "train_examples_per_s": timed_examples / clock.seconds}


def compare_training_speed(models: dict[str, SequenceRanker], data: RankingData, batch_size: int, seed: int,
                           batches: int = 150, rounds: int = 3) -> dict[str, float]:
    """Training examples/s of each model on the same fixed batches, models interleaved round by round so
    that load from other processes hits them alike. A first untimed round traces every batch shape;
    the result is the median over the timed rounds."""
    plan = epoch_plan(data, batch_size, seed, 0)[:batches]
    examples = sum(len(rows) for rows in plan)
    dataset = planned_dataset(data, lambda: iter(plan)).cache()
    speeds = {name: [] for name in models}
    for round_index in range(rounds + 1):
        for name, model in models.items():
            clock = _Clock(0)
            model.fit(dataset, epochs=1, verbose=0, callbacks=[clock])
            if round_index:
                speeds[name].append(examples / clock.seconds)
    return {name: statistics.median(values) for name, values in speeds.items()}


def predict(model: SequenceRanker, data: RankingData, batch_size: int = 1024) -> tuple[np.ndarray, float]:
    """P(label = 1) for every row in row order, and inference examples/s of a second, timed pass (the first
    traces the graph for each batch shape)."""
    forward = tf.function(lambda features: tf.sigmoid(model(features, training=False)), reduce_retracing=True)
    dataset = bucketed_dataset(data, batch_size).cache()
    outputs = [forward(features).numpy() for features, _ in dataset]
    start = time.perf_counter()
    for features, _ in dataset:
        forward(features).numpy()
    speed = data.size / (time.perf_counter() - start)
    probabilities = np.empty(data.size, np.float32)
    probabilities[rows_in_order(data, batch_size)] = np.concatenate(outputs)
    return probabilities, speed


def evaluate(model: SequenceRanker, data: RankingData) -> dict:
    """auc, gauc (grouped by user), logloss and infer_examples_per_s on one split."""
    probabilities, speed = predict(model, data)
    labels, users = data.scalars[schema.LABEL], data.scalars[schema.USER]
    return {"auc": metrics.auc(labels, probabilities), "gauc": metrics.gauc(labels, probabilities, users),
            "logloss": metrics.logloss(labels, probabilities), "infer_examples_per_s": speed}


def train_ranker(features_dir: str, output_dir: str, model_config: ModelConfig, train_config: TrainConfig) -> dict:
    """The ranking stage: train on the train split, measure on test, export the artifact to `output_dir`.

    Returns the metrics (auc, gauc, logloss, throughput, train_s) that are also written to ranker.json.
    """
    spec = schema.FeatureSpec.read(features_dir)
    train_data, test_data = load_split(features_dir, "train"), load_split(features_dir, "test")
    tf.keras.utils.set_random_seed(train_config.seed)
    model = build_model(model_config, spec.num_items, spec.num_categories, train_config.learning_rate)
    result = {**train(model, train_data, train_config), **evaluate(model, test_data)}
    export_ranker(model, features_dir, output_dir, {"ranking_task": spec.ranking_task,
                                                   "train_config": dataclasses.asdict(train_config),
                                                   "test_metrics": result})
    return result


def run_stage(features_dir: str, output_dir: str, model_type: str, epochs: int, seed: int) -> dict:
    """The component's entry point: DIEN or DIN with the paper's defaults."""
    if model_type not in ("dien", "din"):
        raise ValueError(f"ranking model_type must be 'dien' or 'din', got {model_type!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return train_ranker(features_dir, output_dir, ModelConfig(model_type=model_type),
                        TrainConfig(epochs=epochs, seed=seed))
