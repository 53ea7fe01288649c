"""Ranking examples in memory and length-bucketed tf.data batches over them.

A split is read once through the shared reader into flat NumPy arrays. Each epoch, rows are grouped by
history length (random order within a length), cut into batches and the batches shuffled, so every batch
is padded only to its own longest history. The per-batch gather and padding run in parallel tf.data maps;
Python only hands out the row indices of each batch. A train split too large for memory is a StreamedRanking instead:
buckets of users on local disk, read one at a time, batched the same way; a valid or test split too large is
SplitChunks, scored a chunk of rows at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import schema
from components.features import reader
from components.ranking.base import NEGATIVE_CATS, NEGATIVE_ITEMS

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


def take_rows(data: RankingData, rows: np.ndarray) -> RankingData:
    """The given rows (repeats allowed), in that order, as a new RankingData, with their lists when it has them."""
    sequences = {}
    for name, (values, offsets) in data.sequences.items():
        lengths = np.diff(offsets)[rows]
        new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        starts = np.repeat(offsets[:-1][rows] - new_offsets[:-1], lengths)
        sequences[name] = (values[np.arange(new_offsets[-1]) + starts], new_offsets)
    return RankingData(
        {name: values[rows] for name, values in data.scalars.items()},
        sequences,
        {name: values[rows] for name, values in data.lists.items()},
        data.pointwise_columns,
    )


def concatenate(parts: list[RankingData]) -> RankingData:
    """The rows of `parts` one after the other; their lists must have the same columns (the refit's valid steps and
    its replay of train rows, each listed as training lists them)."""
    first = parts[0]
    for part in parts[1:]:
        if part.lists.keys() != first.lists.keys() or part.pointwise_columns != first.pointwise_columns:
            raise ValueError("cannot concatenate ranking rows whose negative lists differ in their columns")
    sequences = {}
    for name in first.sequences:
        values = [part.sequences[name][0] for part in parts]
        lengths = [np.diff(part.sequences[name][1]) for part in parts]
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
        sequences[name] = (np.concatenate(values), offsets)
    return RankingData(
        {name: np.concatenate([part.scalars[name] for part in parts]) for name in first.scalars},
        sequences,
        {name: np.concatenate([part.lists[name] for part in parts]) for name in first.lists},
        first.pointwise_columns,
    )


def load_split(features_dir: str | Path, split: str) -> RankingData:
    """Reads one ranking split; fails with a clear message on mismatched sequence lengths or an empty split."""
    data = read_batches(
        reader.dataset(features_dir, schema.RANKING_DIR, split, batch_size=8192), f"{features_dir}: ranking/{split}"
    )
    if data is None:
        raise schema.SchemaError(f"{features_dir}: ranking split {split!r} has no examples")
    return data


def read_batches(batches, where: str) -> RankingData | None:
    """The rows of parsed batches (reader.dataset's) in their order, checked (`where` names them in an error);
    None for no rows."""
    scalars: dict[str, list[np.ndarray]] = {name: [] for name in SCALARS}
    values: dict[str, list[np.ndarray]] = {name: [] for name in SEQUENCES}
    lengths: dict[str, list[np.ndarray]] = {name: [] for name in SEQUENCES}
    for batch in batches:
        for name in SCALARS:
            scalars[name].append(batch[name].numpy())
        for name in SEQUENCES:
            values[name].append(batch[name].flat_values.numpy())
            lengths[name].append(batch[name].row_lengths().numpy())
    if not scalars[schema.LABEL]:
        return None
    sequences = {}
    for name in SEQUENCES:
        row_lengths = np.concatenate(lengths[name])
        offsets = np.concatenate([[0], np.cumsum(row_lengths)]).astype(np.int64)
        sequences[name] = (np.concatenate(values[name]).astype(np.int64), offsets)
    hist_lengths = np.diff(sequences[schema.HIST_ITEMS][1])
    for name in SEQUENCES[1:]:
        bad = np.flatnonzero(np.diff(sequences[name][1]) != hist_lengths)
        if len(bad):
            raise schema.SchemaError(f"{where}: {name} differs in length from {schema.HIST_ITEMS} in {len(bad)} rows")
    labels = np.concatenate(scalars[schema.LABEL])
    if not np.isin(labels, (0.0, 1.0)).all():
        raise schema.SchemaError(f"{where}: labels must be 0 or 1")
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


def write_bucket(path: str, data: RankingData, hard: np.ndarray | None) -> None:
    """Saves a bucket's rows (their sequences share one offsets array), their lists when they have them, and their
    hard negatives as one .npz."""
    arrays = {f"scalar__{name}": values for name, values in data.scalars.items()}
    arrays.update({f"sequence__{name}": data.sequences[name][0] for name in SEQUENCES})
    arrays.update({f"list__{name}": values for name, values in data.lists.items()})
    arrays["offsets"] = data.sequences[SEQUENCES[0]][1]
    if hard is not None:
        arrays["hard"] = hard
    np.savez(path, **arrays)


def read_bucket(path: str) -> tuple[RankingData, np.ndarray | None]:
    """(rows, hard negatives or None) of a bucket that write_bucket saved; the rows carry the lists saved with them."""
    with np.load(path) as arrays:
        offsets = arrays["offsets"]
        scalars = {name: arrays[f"scalar__{name}"] for name in SCALARS}
        sequences = {name: (arrays[f"sequence__{name}"], offsets) for name in SEQUENCES}
        lists = {name: arrays[f"list__{name}"] for name in (NEGATIVE_ITEMS, NEGATIVE_CATS) if f"list__{name}" in arrays}
        hard = arrays["hard"] if "hard" in arrays.files else None
    return RankingData(scalars, sequences, lists), hard


@dataclasses.dataclass(frozen=True)
class StreamedRanking:
    """A train split too large for memory (issue 25), partitioned by user into buckets on local disk: each bucket's
    rows with their hard negatives in one .npz (write_bucket). Training reads one bucket at a time; `complete` gives a
    bucket's rows their lists (training.with_lists: the popularity draws need the whole split's counts, known only
    once every bucket is read). The folder is removed with this object."""

    paths: tuple[str, ...]  # the non-empty buckets, in bucket order
    buckets: tuple[int, ...]  # the bucket index of each: the key of its generators
    sizes: tuple[int, ...]
    pointwise_columns: tuple[bool, ...] | None  # as RankingData's, the same for every bucket
    complete: Callable[[RankingData, np.ndarray | None, tuple[int, ...]], RankingData]
    directory: tempfile.TemporaryDirectory

    @property
    def size(self) -> int:
        """The rows of the split."""
        return sum(self.sizes)

    def bucket(self, index: int) -> RankingData:
        """The rows of the `index`-th non-empty bucket, with their lists."""
        data, hard = read_bucket(self.paths[index])
        return self.complete(data, hard, (self.buckets[index],))

    def dataset(self, batch_size: int, seed: int) -> tf.data.Dataset:
        """Training batches as bucketed_dataset's (histories padded to each batch's longest), a new order each
        iteration (epoch): the buckets in an order drawn from (seed, epoch), each bucket's rows planned by batch_plan
        with a generator of (seed, epoch, bucket). Every row once an epoch; memory holds one bucket and a few batches.
        A batch's rows are drawn from its whole bucket (the steps of users a hash picked), never from one user alone."""
        epochs = itertools.count()

        def batches():
            epoch = next(epochs)
            for index in np.random.default_rng([seed, epoch]).permutation(len(self.paths)).tolist():
                data = self.bucket(index)
                rng = np.random.default_rng([seed, epoch, self.buckets[index]])
                for rows in batch_plan(data.lengths, batch_size, rng):
                    yield numpy_batch(data, rows)

        features = {name: tf.TensorSpec([None, None], tf.int64) for name in (*SEQUENCES, NEGATIVE_ITEMS, NEGATIVE_CATS)}
        features.update({name: tf.TensorSpec([None], tf.int64) for name in SCALARS if name != schema.LABEL})
        signature = (features, tf.TensorSpec([None], tf.float32))
        return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(8)


def numpy_batch(data: RankingData, rows: np.ndarray) -> tuple[dict, np.ndarray]:
    """(features, labels) of the given rows as _gatherer gives them (sequences right-padded with 0 to the rows'
    longest history), in NumPy: a streamed bucket is not a graph constant."""
    offsets = data.sequences[SEQUENCES[0]][1]
    lengths = offsets[rows + 1] - offsets[rows]
    steps = np.arange(lengths.max(initial=0))
    real = steps[None, :] < lengths[:, None]
    at = np.where(real, offsets[rows][:, None] + steps[None, :], 0)
    features = {name: np.where(real, data.sequences[name][0][at], 0) for name in SEQUENCES}
    features.update({name: values[rows] for name, values in data.scalars.items() if name != schema.LABEL})
    features.update({name: values[rows] for name, values in data.lists.items()})
    return features, data.scalars[schema.LABEL][rows]


def listed(data: RankingData, hard: np.ndarray | None, key: tuple[int, ...], pointwise: tuple[bool, ...] | None):
    """A bucket saved with its lists, as StreamedRanking.complete gives it (the refit's buckets: each part listed
    with its own split's popularity draws before they were joined)."""
    return dataclasses.replace(data, pointwise_columns=pointwise)


@dataclasses.dataclass(frozen=True)
class SplitChunks:
    """A valid or test split too large to hold with its histories (issue 25), read `chunk_rows` rows at a time in
    load_split's row order: scoring it keeps a probability, a label and a user a row, never the sequences."""

    features_dir: str
    split: str
    chunk_rows: int = reader.BUCKET_ROWS

    @property
    def size(self) -> int:
        """The rows of the split (the features manifest's count)."""
        return reader.example_count(self.features_dir, schema.RANKING_DIR, self.split)

    def chunks(self) -> Iterator[RankingData]:
        """The split's rows, checked as load_split checks them, a chunk of about `chunk_rows` at a time; refuses an
        empty split."""
        where, group, rows, empty = f"{self.features_dir}: ranking/{self.split}", [], 0, True
        batch_size = min(8192, self.chunk_rows)
        for batch in reader.dataset(self.features_dir, schema.RANKING_DIR, self.split, batch_size=batch_size):
            group.append(batch)
            rows += int(batch[schema.LABEL].shape[0])
            if rows >= self.chunk_rows:
                yield read_batches(group, where)
                group, rows, empty = [], 0, False
        if group:
            yield read_batches(group, where)
        elif empty:
            raise schema.SchemaError(f"{where}: ranking split {self.split!r} has no examples")

    def labels(self) -> np.ndarray:
        """The split's labels alone (in the reader's canonical order: what counting them needs)."""
        return reader.load_columns(self.features_dir, schema.RANKING_DIR, self.split, (schema.LABEL,))[schema.LABEL]
