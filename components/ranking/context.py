"""Per-candidate evidence the retrieval embedding does not carry, computed inside the ranker from the history.

Retrieval scores a candidate by one dot product with a query vector. The rankers of DIEN's line win with side
features the first stage lacks; these are the ones that need nothing beyond the history and the catalogue, so they
are served from the same raw-id request and computed in the SavedModel itself (no second implementation to drift):
  transition           sum_l decay**l * P(candidate | l-th most recent history item), the item-to-item
                       baseline's score (on Amazon Beauty about as strong as retrieval on its own)
  has_transition       1 when that sum is positive (most candidates have no counted transition at all)
  reverse_transition   the same out of the candidate into the recent items (complements bought either way round)
  log_popularity       log(1 + the candidate's count as a train target) / 5
  category_share       share of the history's steps in the candidate's category
  same_category        1 when the most recent step is in the candidate's category
  brand_share          share of the history's steps of the candidate's brand (unknown brands never match)
Counts come from the train rows' own (last history item -> target) steps. Scoring a train row's own target, the
row's step is left out of the counts (`leave_out`): otherwise every train positive would carry its own transition
and popularity count and the ranker would learn to trust a signal that held-out targets never have.
The retrieval score and rank stay out of the model for the same reason (the retriever was fitted on the train
targets); the funnel adds the retrieval score with a weight chosen on valid (serving/fusion.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from components import schema

FEATURES = (
    "transition",
    "has_transition",
    "reverse_transition",
    "log_popularity",
    "category_share",
    "same_category",
    "brand_share",
)
WINDOW, DECAY = 5, 0.6  # as the item-to-item baseline (components/baselines.py)
POPULARITY_SCALE = 5.0


@dataclasses.dataclass(frozen=True)
class ItemStatistics:
    """Counts of the train steps: pair_keys (sorted prev * num_items + next) with their counts, each item's
    out-degree and count as a target, and its brand index (0 = unknown)."""

    pair_keys: np.ndarray
    pair_counts: np.ndarray
    out_degree: np.ndarray
    target_counts: np.ndarray
    brand: np.ndarray

    @property
    def num_items(self) -> int:
        """The item vocabulary size the statistics are indexed by."""
        return len(self.brand)

    @classmethod
    def from_steps(cls, previous: np.ndarray, targets: np.ndarray, brand: np.ndarray) -> ItemStatistics:
        """The counts of train steps (previous item [n] -> target [n]) and each item's brand, checked against the
        vocabulary."""
        num_items = len(brand)
        previous, targets = np.asarray(previous, np.int64), np.asarray(targets, np.int64)
        if previous.shape != targets.shape:
            raise ValueError(f"previous and targets differ in shape: {previous.shape} vs {targets.shape}")
        for name, values in (("previous", previous), ("target", targets)):
            if len(values) and (values.min() < 0 or values.max() >= num_items):
                raise ValueError(f"{name} item index outside the vocabulary [0, {num_items})")
        keys, counts = np.unique(previous * num_items + targets, return_counts=True)
        return cls(
            keys,
            counts.astype(np.float32),
            np.bincount(previous, minlength=num_items).astype(np.float32),
            np.bincount(targets, minlength=num_items).astype(np.float32),
            np.asarray(brand, np.int64),
        )

    def merged(self, other: ItemStatistics) -> ItemStatistics:
        """The statistics of both sets of steps, as from_steps gives them for all the steps at once (counts summed): a
        streamed split's, bucket by bucket."""
        keys, where = np.unique(np.concatenate([self.pair_keys, other.pair_keys]), return_inverse=True)
        counts = np.bincount(where, weights=np.concatenate([self.pair_counts, other.pair_counts]), minlength=len(keys))
        return ItemStatistics(
            keys,
            counts.astype(np.float32),
            self.out_degree + other.out_degree,
            self.target_counts + other.target_counts,
            self.brand,
        )


def item_brands(features_dir: str | Path, num_items: int) -> np.ndarray:
    """Brand index of every item index (0 where unknown or reserved), from item_features.parquet."""
    frame = pd.read_parquet(Path(features_dir, schema.ITEM_FEATURES), columns=["item_index", "brand"])
    codes, _ = pd.factorize(frame["brand"].where(frame["brand"] != "", None), use_na_sentinel=True)
    brand = np.zeros(num_items, np.int64)
    brand[frame["item_index"].to_numpy()] = codes + 1  # factorize's -1 (unknown) becomes 0
    return brand


def recency_weights(mask: tf.Tensor, window: int = WINDOW, decay: float = DECAY) -> tf.Tensor:
    """[B, T]: decay**l on the l-th most recent real step (l < window), 0 elsewhere; any padding side."""
    after = tf.cumsum(mask, axis=1, reverse=True, exclusive=True)
    return tf.where((mask > 0) & (after < window), tf.pow(tf.constant(decay, tf.float32), after), 0.0)


class CandidateContext(tf.keras.layers.Layer):
    """(hist_items, hist_cats [B, T], candidates and their categories [B, N], leave_out [B, N]) -> [B, N, 7].

    The statistics are non-trainable variables, so they travel with the model's weights into the SavedModel.
    """

    def __init__(self, statistics: ItemStatistics, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.num_items = statistics.num_items

        def constant(name, values, dtype):
            return self.add_weight(
                name=name, shape=values.shape, dtype=dtype, trainable=False, initializer=tf.constant_initializer(values)
            )

        # A sentinel key past every real one keeps searchsorted inside the table.
        sentinel = np.int64(self.num_items) * self.num_items
        self.pair_keys = constant("pair_keys", np.r_[statistics.pair_keys, sentinel], tf.int64)
        self.pair_counts = constant("pair_counts", np.r_[statistics.pair_counts, 0.0].astype(np.float32), tf.float32)
        self.out_degree = constant("out_degree", statistics.out_degree, tf.float32)
        self.target_counts = constant("target_counts", statistics.target_counts, tf.float32)
        self.brand = constant("brand", statistics.brand, tf.int64)

    def pair_count(self, previous: tf.Tensor, following: tf.Tensor) -> tf.Tensor:
        """The train count [shape of keys] of each (previous, following) item pair; 0 for a pair never seen."""
        keys = previous * self.num_items + following
        flat = tf.reshape(keys, [1, -1])
        position = tf.searchsorted(self.pair_keys[None, :], flat)[0]
        found = tf.equal(tf.gather(self.pair_keys, position), flat[0])
        return tf.reshape(tf.where(found, tf.gather(self.pair_counts, position), 0.0), tf.shape(keys))

    def call(self, hist_items, hist_cats, mask, candidates, candidate_cats, leave_out=None):
        """The candidates' context features [B, N, 7] from the history [B, T] (a step left out where leave_out says)."""
        weights = recency_weights(mask)[:, None, :]  # [B, 1, T]
        hist, cands = hist_items[:, None, :], candidates[:, :, None]  # [B, 1, T], [B, N, 1]
        counts = self.pair_count(hist, cands)  # [B, N, T]
        degree = tf.gather(self.out_degree, hist_items)[:, None, :]
        popularity = tf.gather(self.target_counts, candidates)
        if leave_out is not None:
            # the row's own step is (most recent history item -> its target): take it out of both counts
            own = (
                leave_out[:, :, None]
                * tf.cast(
                    tf.equal(tf.cumsum(mask, axis=1, reverse=True, exclusive=True), 0.0) & (mask > 0), tf.float32
                )[:, None, :]
            )
            counts, degree = counts - own, degree - own
            popularity = popularity - leave_out
        transition = tf.reduce_sum(weights * tf.math.divide_no_nan(counts, degree), axis=2)
        reverse = tf.reduce_sum(
            weights
            * tf.math.divide_no_nan(self.pair_count(cands, hist), tf.gather(self.out_degree, candidates)[:, :, None]),
            axis=2,
        )
        real = tf.reduce_sum(mask, axis=1, keepdims=True)  # [B, 1]
        same_category = tf.cast(tf.equal(hist_cats[:, None, :], candidate_cats[:, :, None]), tf.float32) * mask[:, None]
        category_share = tf.math.divide_no_nan(tf.reduce_sum(same_category, axis=2), real)
        last = tf.cast(tf.equal(tf.cumsum(mask, axis=1, reverse=True, exclusive=True), 0.0), tf.float32) * mask
        same_as_last = tf.reduce_sum(same_category * last[:, None, :], axis=2)
        hist_brand, cand_brand = tf.gather(self.brand, hist_items), tf.gather(self.brand, candidates)
        same_brand = (
            tf.cast(tf.equal(hist_brand[:, None, :], cand_brand[:, :, None]) & (cand_brand[:, :, None] > 0), tf.float32)
            * mask[:, None]
        )
        brand_share = tf.math.divide_no_nan(tf.reduce_sum(same_brand, axis=2), real)
        return tf.stack(
            [
                transition,
                tf.cast(transition > 0, tf.float32),
                reverse,
                tf.math.log1p(tf.maximum(popularity, 0.0)) / POPULARITY_SCALE,
                category_share,
                same_as_last,
                brand_share,
            ],
            axis=-1,
        )
