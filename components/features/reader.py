"""Reads the features output back: the one reader that retrieval, ranking, evaluation and export share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import schema
from components.features import tfexample

_SHARD = re.compile(r"(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord")


def tfrecord_files(features_dir: str | Path, kind: str, split: str) -> list[str]:
    """The TFRecord shards of one example kind (`retrieval` or `ranking`) and split, in shard order.

    Refuses, naming the file, a shard set that is not whole: a name outside {split}-SSSSS-of-NNNNN,
    shards that disagree on NNNNN, a missing shard, a damaged record, or a record count that differs
    from the features manifest (stats.json), which the Beam job publishes last.
    """
    if split not in schema.SPLITS:
        raise schema.SchemaError(f"unknown split {split!r}; expected one of {schema.SPLITS}")
    directory = Path(features_dir, kind)
    found = sorted(directory.glob(f"{split}-*.tfrecord"))
    if not found:
        raise schema.SchemaError(f"{features_dir}: no {kind} examples for split {split!r}")
    shards: dict[int, Path] = {}
    totals = set()
    for path in found:
        match = _SHARD.fullmatch(path.name)
        if not match or match["split"] != split:
            raise schema.SchemaError(f"{path}: not a shard name ({split}-SSSSS-of-NNNNN.tfrecord)")
        shards[int(match["index"])] = path
        totals.add(int(match["count"]))
    if len(totals) > 1:
        raise schema.SchemaError(f"{directory}: the {split} shards name different totals {sorted(totals)}")
    total = totals.pop()
    missing = [f"{split}-{i:05d}-of-{total:05d}.tfrecord" for i in range(total) if i not in shards]
    if missing or max(shards) >= total:
        what = f"{len(missing)} of {total} shard(s) missing" if missing else f"a shard beyond {total}"
        raise schema.SchemaError(
            f"{directory / (missing or [found[-1].name])[0]}: {what}; the {kind} {split} examples are incomplete"
        )
    files = [str(shards[i]) for i in range(total)]
    expected = _manifest_count(features_dir, kind, split)
    got = sum(_count_records(path) for path in files)
    if got != expected:
        raise schema.SchemaError(
            f"{directory}: the {split} shards hold {got} records, the features manifest {schema.STATS} says {expected}"
        )
    return files


def _manifest_count(features_dir: str | Path, kind: str, split: str) -> int:
    return schema.FeaturesManifest.read(features_dir).example_count(kind, split)


def _count_records(path: str) -> int:
    """Reads every record once, so that a damaged file is named here and not deep inside a training loop."""
    try:
        return tfexample.count_frames(path)
    except ValueError as err:
        raise schema.SchemaError(f"{path} is damaged: {err}") from err


def _parse_spec(kind: str, split: str, columns: tuple[str, ...] | None = None) -> dict:
    names: tuple[str, ...] = schema.RETRIEVAL_FEATURES if kind == schema.RETRIEVAL_DIR else schema.RANKING_FEATURES
    if kind == schema.RETRIEVAL_DIR and split != "train":
        names += schema.HELD_OUT_FEATURES
    if columns is not None:
        unknown = sorted(set(columns) - set(names))
        if unknown:
            raise schema.SchemaError(f"the {kind} {split} examples have no feature(s) {unknown}")
        names = tuple(name for name in names if name in columns)
    spec = {}
    for name in names:
        if name in schema.SEQUENCE_FEATURES:
            spec[name] = tf.io.RaggedFeature(tf.int64)
        elif name == schema.LABEL:
            spec[name] = tf.io.FixedLenFeature([], tf.float32)
        else:
            spec[name] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def dataset(
    features_dir: str | Path, kind: str, split: str, batch_size: int, columns: tuple[str, ...] | None = None
) -> tf.data.Dataset:
    """Batches of parsed examples; sequence features are `tf.RaggedTensor`s, right-ragged, oldest first. `columns`
    parses only those features (None: every one of the kind and split)."""
    spec = _parse_spec(kind, split, columns)
    files = tfrecord_files(features_dir, kind, split)
    return (
        tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
        .batch(batch_size)
        .map(lambda records: tf.io.parse_example(records, spec), num_parallel_calls=tf.data.AUTOTUNE)
    )


def load_numpy(features_dir: str | Path, kind: str, split: str) -> dict[str, np.ndarray]:
    """The whole split in memory: scalars as 1-D arrays (int64, float64), sequences as object arrays of int64 arrays.

    Evaluation and the baselines need every example at once (one per user on valid/test), so this
    trades generality for simple NumPy code (trainers of sets too large for memory read `stream`). Rows come in one
    canonical order whatever shard Beam wrote each to (canonical_order): the trainers' batches, and so their models,
    then depend on the examples and the seed only. Batches are kept as NumPy arrays (a sequence's rows are views into
    its one flat array), never as Python lists."""
    return _numpy_columns(dataset(features_dir, kind, split, batch_size=4096))


def load_columns(features_dir: str | Path, kind: str, split: str, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Scalar `columns` of a split alone, in load_numpy's canonical order: a split's users and targets without its
    histories (16 bytes a row for two), for a trainer that must not hold the whole split."""
    parsed = _numpy_columns(dataset(features_dir, kind, split, 4096, tuple(dict.fromkeys((schema.USER, *columns)))))
    return {name: parsed.get(name, np.zeros(0, np.int64)) for name in columns}


def load_users(features_dir: str | Path, kind: str, split: str, users: np.ndarray) -> dict[str, np.ndarray]:
    """load_numpy's columns for the rows of the user indices `users` alone, in its canonical order: each batch of
    records is parsed for its users first and only theirs are parsed whole, so memory holds their rows."""
    keep = np.unique(np.asarray(users, np.int64))
    spec, user_spec = _parse_spec(kind, split), {schema.USER: tf.io.FixedLenFeature([], tf.int64)}

    def batches():
        for records in tf.data.TFRecordDataset(tfrecord_files(features_dir, kind, split)).batch(4096).prefetch(2):
            chosen = np.isin(tf.io.parse_example(records, user_spec)[schema.USER].numpy(), keep)
            if chosen.any():
                yield tf.io.parse_example(tf.boolean_mask(records, chosen), spec)

    return _numpy_columns(batches())


def load_sample(
    features_dir: str | Path,
    kind: str,
    split: str,
    user_ids: np.ndarray,
    count: int,
    users: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """load_numpy's columns for the rows metrics.sample_users keeps (those of the `count` users whose ids hash lowest;
    every row for 0), read without holding the split: its user column (`users`, when the caller read it already),
    then those users' rows alone (load_users). `user_ids`: user index -> id, reserved indices included."""
    from components import metrics

    if count <= 0:
        return load_numpy(features_dir, kind, split)
    ids = np.asarray(user_ids, dtype=object)
    if users is None:
        users = load_columns(features_dir, kind, split, (schema.USER,))[schema.USER]
    rows = metrics.sample_users(ids[users], count)
    if len(rows) == len(users):
        return load_numpy(features_dir, kind, split)
    chosen = load_users(features_dir, kind, split, users[rows])
    kept = metrics.sample_users(ids[chosen[schema.USER]], count)
    return {name: column[kept] for name, column in chosen.items()}


def _numpy_columns(batches: Iterable[dict]) -> dict[str, np.ndarray]:
    """load_numpy's columns from parsed batches, in canonical order ({} for no batches)."""
    scalars: dict[str, list[np.ndarray]] = {}
    flat: dict[str, list[np.ndarray]] = {}
    lengths: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, value in batch.items():
            if isinstance(value, tf.RaggedTensor):
                flat.setdefault(name, []).append(value.flat_values.numpy().astype(np.int64, copy=False))
                lengths.setdefault(name, []).append(value.row_lengths().numpy())
            else:
                scalars.setdefault(name, []).append(value.numpy())
    out = {}
    for name in dict.fromkeys([*scalars, *flat]):
        if name in flat:
            values = np.concatenate(flat[name])
            bounds = np.cumsum(np.concatenate(lengths[name]))[:-1]
            rows = np.empty(len(bounds) + 1, dtype=object)
            rows[:] = np.split(values, bounds)
            out[name] = rows
        else:
            column = np.concatenate(scalars[name])
            out[name] = column.astype(np.float64 if column.dtype.kind == "f" else np.int64, copy=False)
    order = canonical_order(out)
    return {name: values[order] for name, values in out.items()}


# The trainers' stream (issue 25): a split too large for memory is partitioned once by user into buckets on local disk
# (one pass over the shards, a bounded number of records in flight), and each epoch reads the buckets one at a time in a
# seeded order, each bucket in canonical order and then shuffled in memory by (seed, epoch, bucket). Memory holds one
# bucket, whatever the split's size; the order is a function of the rows and the seed, not of the shard Beam wrote
# each user to (a shuffle buffer over file order would depend on it, and would fill its batches with the few users
# whose rows are together in the files); and since every row of a user lands in one bucket, what a trainer derives
# per user (train sequences, a user's bought items) is whole within its bucket.
TRAIN_INPUTS = ("auto", "memory", "stream")
STREAM_ABOVE = 1_000_000  # "auto" streams a train split of more examples (medium: 653,339; large: 7,073,609)
BUCKET_ROWS = 131_072  # examples per bucket (on average): the in-memory share of a streamed split


def train_input(mode: str, examples: int) -> str:
    """ "memory" or "stream": `mode`, or for "auto", stream above STREAM_ABOVE examples. An unknown mode is refused."""
    if mode not in TRAIN_INPUTS:
        raise ValueError(f"train_input must be one of {TRAIN_INPUTS}, got {mode!r}")
    if mode == "auto":
        return "stream" if examples > STREAM_ABOVE else "memory"
    return mode


def example_count(features_dir: str | Path, kind: str, split: str) -> int:
    """The examples of a split as the features manifest counts them (nothing is read)."""
    return _manifest_count(features_dir, kind, split)


def user_bucket(users: np.ndarray, buckets: int) -> np.ndarray:
    """int64 [n]: each user index's bucket in [0, buckets), from a fixed 64-bit mix (splitmix64's finaliser) of the
    index, so buckets are random-like subsets of users whatever order the vocabulary gives them."""
    z = np.asarray(users, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(buckets)).astype(np.int64)


def bucket_count(examples: int, bucket_rows: int = BUCKET_ROWS) -> int:
    """Buckets for a split of `examples`: enough that one holds about `bucket_rows` (one for a small split)."""
    return max(1, -(-examples // max(1, bucket_rows)))


def partition_by_user(
    features_dir: str | Path, kind: str, split: str, directory: str | Path, buckets: int
) -> list[str]:
    """Writes the split's records into `buckets` TFRecord files under `directory` by user_bucket, each record as it is
    (one pass over the shards in shard order, 4096 records at a time), and returns the files in bucket order.
    A user's records keep their order in the shards, so a bucket read in canonical order is the rows load_numpy
    gives for those users, in load_numpy's order."""
    files = tfrecord_files(features_dir, kind, split)
    Path(directory).mkdir(parents=True, exist_ok=True)
    paths = [str(Path(directory, f"{kind}-{split}-bucket-{b:05d}.tfrecord")) for b in range(buckets)]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    user_spec = {schema.USER: tf.io.FixedLenFeature([], tf.int64)}
    try:
        for batch in tf.data.TFRecordDataset(files).batch(4096).prefetch(2):
            users = tf.io.parse_example(batch, user_spec)[schema.USER].numpy()
            for record, bucket in zip(batch.numpy().tolist(), user_bucket(users, buckets).tolist(), strict=True):
                writers[bucket].write(record)
    finally:
        for writer in writers:
            writer.close()
    return paths


def load_bucket(path: str | Path, kind: str, split: str) -> dict[str, np.ndarray]:
    """One bucket file of partition_by_user as load_numpy gives a split: the same columns, in canonical order."""
    return _numpy_columns(bucket_dataset(path, kind, split, batch_size=4096))


def bucket_dataset(path: str | Path, kind: str, split: str, batch_size: int) -> tf.data.Dataset:
    """Batches of parsed examples of one bucket file of partition_by_user, in file order, as `dataset` parses them."""
    spec = _parse_spec(kind, split)
    return (
        tf.data.TFRecordDataset([str(path)]).batch(batch_size).map(lambda records: tf.io.parse_example(records, spec))
    )


def canonical_order(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Rows by user index, each user's rows in the order the features job wrote them (one list per user, so
    together and in time order): a function of the rows alone. Beam assigns those lists to shards as its workers
    happen to run, so file order differs run to run (on Beauty the same 131,413 train examples in other shards
    gave another model from the same seed)."""
    users = columns.get(schema.USER)
    if users is None:
        return np.arange(len(next(iter(columns.values()), ())))
    return np.argsort(users, kind="stable")


def pad_left(sequences, length: int | None = None, fill: int = schema.PAD_INDEX) -> np.ndarray:
    """Stacks int sequences into a [n, length] matrix, padded with `fill` (PAD_INDEX; NO_GAP for gaps) on the left.

    Left padding keeps the most recent item in the last column for every row.
    """
    length = length or max((len(s) for s in sequences), default=1) or 1
    out = np.full((len(sequences), length), fill, dtype=np.int64)
    for row, seq in enumerate(sequences):
        seq = np.asarray(seq[-length:], dtype=np.int64)
        if len(seq):
            out[row, length - len(seq) :] = seq
    return out
