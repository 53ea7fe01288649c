"""The `retrieval` entry of the bench JSON: test metrics, training speed and serving latency."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import schema
from components.retrieval import export, training
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import Catalogue, Examples, load_examples, sample_users_of

log = logging.getLogger(__name__)

LATENCY_CALLS = {"one_user": (1, 200), "batch_1000": (1000, 20)}  # name: (users per call, timed calls)


def _string_histories(examples: Examples, catalogue: Catalogue, rows: np.ndarray) -> dict[str, tf.Tensor]:
    category_ids = np.concatenate([["", "[OOV]"], catalogue.category_ids]).astype(object)
    return {
        "hist_items": tf.constant(catalogue.item_ids[examples.hist_items[rows]].astype(str)),
        "hist_cats": tf.constant(category_ids[examples.hist_cats[rows]].astype(str)),
    }


def serving_latency(index_dir: str | Path, examples: Examples, catalogue: Catalogue, seed: int) -> dict:
    """p50/p99 milliseconds of the index SavedModel's serving signature on raw string ids."""
    serve = tf.saved_model.load(str(index_dir)).signatures["serving_default"]
    rng = np.random.default_rng(seed)
    out = {}
    for name, (users, calls) in LATENCY_CALLS.items():
        requests = [_string_histories(examples, catalogue, rng.integers(0, len(examples), users)) for _ in range(calls)]
        serve(**requests[0])  # warm-up: the first call builds the graph
        times = []
        for request in requests:
            started = time.perf_counter()
            serve(**request)["item_ids"].numpy()
            times.append((time.perf_counter() - started) * 1000)
        out[name] = {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}
    return out


def retrieval_bench(
    features_dir: str | Path, seed: int, model_dir: str | Path | None = None, test_max_users: int = 0, **settings
) -> dict:
    """Trains with the shipped defaults (and `settings` overrides), then measures on the test split (with
    `test_max_users`, on the users whose ids hash lowest: evaluation's sample at its max_users).

    Test is read only after training has finished and the model has been selected on valid. The
    artifact is written to `model_dir` (for evaluation and export downstream) or a temporary folder.
    """
    config = dataclasses.replace(RetrievalConfig(), seed=seed, **settings)
    result = training.train_from_features(features_dir, config)
    test = load_examples(features_dir, "test", config.max_len)
    user_ids = schema.indexed_vocab(features_dir, schema.USER_VOCAB)
    test = sample_users_of(test, user_ids, test_max_users)
    metrics = training.evaluate(result.model, test)
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        written = export.export(
            result.model, result.catalogue, config, model_dir or Path(tmp) / "model", selected=result.selected
        )
        latency = serving_latency(written / export.INDEX, test, result.catalogue, seed)
    log.info(
        "retrieval test: hit@20 %.4f ndcg@20 %.4f mrr %.4f; latency one user p50 %.1f ms, 1000 users p50 %.1f ms",
        metrics["hit@20"],
        metrics["ndcg@20"],
        metrics["mrr"],
        latency["one_user"]["p50"],
        latency["batch_1000"]["p50"],
    )
    return {
        **metrics,
        "train_examples_per_s": result.train_examples_per_s,
        "train_s": result.train_s,
        "latency_ms": latency,
        "best_epoch": result.best_epoch,
        "test_users": len(test),
        "valid": result.valid_metrics,
    }
