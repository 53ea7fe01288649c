"""Ranking examples in memory and length-bucketed tf.data batches over them.

A split is read once through the shared reader into flat NumPy arrays. Each epoch, rows are grouped by
history length (random order within a length), cut into batches and the batches shuffled, so every batch
is padded only to its own longest history. The per-batch gather and padding run in parallel tf.data maps;
Python only hands out the row indices of each batch.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import schema
from components.features import reader

SEQUENCES = (
    schema.HIST_ITEMS,
    schema.HIST_CATS,
    schema.HIST_TYPES,
    schema.HIST_GAPS,
    schema.NOCLICK_ITEMS,
    schema.NOCLICK_CATS,
)
SCALARS = (schema.USER, schema.TARGET_ITEM, schema.TARGET_CAT, schema.TARGET_GAP, schema.LABEL)


@dataclasses.dataclass
class RankingData:
    """One split: `scalars[name]` [rows]; `sequences[name]` = (flat values, row offsets [rows + 1]); for
    listwise training, `lists[name]` [rows, M] (base.NEGATIVE_ITEMS and NEGATIVE_CATS), and `pointwise_columns`
    (1 + M bools: the target, then each list column; None: all) the entries the pointwise loss reads
    (training.list_loss)."""

    scalars: dict
    sequences: dict
    lists: dict = dataclasses.field(default_factory=dict)
    pointwise_columns: tuple[bool, ...] | None = None

    @property
    def size(self) -> int:
        """The rows of the split."""
        return len(self.scalars[schema.LABEL])

    @property
    def lengths(self) -> np.ndarray:
        """int64 [rows]: each row's history length."""
        return np.diff(self.sequences[schema.HIST_ITEMS][1])


def load_split(features_dir: str | Path, split: str) -> RankingData:
    """Reads one ranking split; fails with a clear message on mismatched sequence lengths or an empty split."""
    scalars = {name: [] for name in SCALARS}
    values = {name: [] for name in SEQUENCES}
    lengths = {name: [] for name in SEQUENCES}
    for batch in reader.dataset(features_dir, schema.RANKING_DIR, split, batch_size=8192):
        for name in SCALARS:
            scalars[name].append(batch[name].numpy())
        for name in SEQUENCES:
            values[name].append(batch[name].flat_values.numpy())
            lengths[name].append(batch[name].row_lengths().numpy())
    if not scalars[schema.LABEL]:
        raise schema.SchemaError(f"{features_dir}: ranking split {split!r} has no examples")
    sequences = {}
    for name in SEQUENCES:
        row_lengths = np.concatenate(lengths[name])
        offsets = np.concatenate([[0], np.cumsum(row_lengths)]).astype(np.int64)
        sequences[name] = (np.concatenate(values[name]).astype(np.int64), offsets)
    hist_lengths = np.diff(sequences[schema.HIST_ITEMS][1])
    for name in SEQUENCES[1:]:
        bad = np.flatnonzero(np.diff(sequences[name][1]) != hist_lengths)
        if len(bad):
            raise schema.SchemaError(
                f"{features_dir}: ranking/{split}: {name} differs in length from {schema.HIST_ITEMS} in {len(bad)} rows"
            )
    labels = np.concatenate(scalars[schema.LABEL])
    if not np.isin(labels, (0.0, 1.0)).all():
        raise schema.SchemaError(f"{features_dir}: ranking/{split}: labels must be 0 or 1")
    return RankingData({name: np.concatenate(parts) for name, parts in scalars.items()}, sequences)


def batch_plan(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Row indices of each batch, rows of similar length together.

    With `rng`: random order within each length and a random batch order (training). Without: row order
    sorted by length, deterministic (evaluation).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        shuffled = rng.permutation(len(lengths))
        order = shuffled[np.argsort(lengths[shuffled], kind="stable")]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def epoch_plan(data: RankingData, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The training batches of one epoch: a pure function of (seed, epoch)."""
    return batch_plan(data.lengths, batch_size, np.random.default_rng([seed, epoch]))


def _gatherer(data: RankingData):
    """A tf function: row indices -> (features dict with right-padded [b, T] sequences, labels [b]).

    The sequences of a row have one length, so they are stacked into one ragged [rows, (T), 6] tensor and gathered
    and padded once per batch instead of once per sequence (padding is 0 everywhere: padded steps are masked).
    """
    offsets = data.sequences[SEQUENCES[0]][1]
    for name in SEQUENCES[1:]:
        if not np.array_equal(data.sequences[name][1], offsets):
            raise schema.SchemaError(f"ranking data: {name} differs in length from {SEQUENCES[0]}")
    stacked = np.stack([data.sequences[name][0] for name in SEQUENCES], axis=1)
    ragged = tf.RaggedTensor.from_row_splits(tf.constant(stacked), tf.constant(offsets), validate=False)
    scalars = {name: tf.constant(values) for name, values in data.scalars.items()}
    lists = {name: tf.constant(values) for name, values in data.lists.items()}

    def gather(rows):
        padded = tf.gather(ragged, rows).to_tensor()
        features = {name: padded[..., index] for index, name in enumerate(SEQUENCES)}
        features.update({name: tf.gather(tensor, rows) for name, tensor in scalars.items() if name != schema.LABEL})
        features.update({name: tf.gather(tensor, rows) for name, tensor in lists.items()})
        return features, tf.gather(scalars[schema.LABEL], rows)

    return gather


def bucketed_dataset(data: RankingData, batch_size: int, seed: int | None = None) -> tf.data.Dataset:
    """Batches padded to their own longest history. With a seed, a new shuffled plan each iteration (epoch),
    the same sequence of plans for the same seed, so models timed against each other see the same batches.
    Without a seed, one deterministic pass in length order; `rows_in_order` gives the row of each output."""
    epochs = itertools.count()

    def plans():
        if seed is None:
            yield from batch_plan(data.lengths, batch_size, None)
        else:
            yield from epoch_plan(data, batch_size, seed, next(epochs))

    return planned_dataset(data, plans)


def planned_dataset(data: RankingData, plans) -> tf.data.Dataset:
    """Batches for the row indices that the generator function `plans` yields, gathered and padded in parallel."""
    rows = tf.data.Dataset.from_generator(plans, output_signature=tf.TensorSpec([None], tf.int64))
    return rows.map(_gatherer(data), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def rows_in_order(data: RankingData, batch_size: int) -> np.ndarray:
    """The row index of each example in the order an unseeded `bucketed_dataset` yields them."""
    return np.concatenate(batch_plan(data.lengths, batch_size, None))
