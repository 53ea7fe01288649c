"""Reads the features output back: the one reader that retrieval, ranking, evaluation and export share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from components import schema


def tfrecord_files(features_dir: str | Path, kind: str, split: str) -> list[str]:
    """The TFRecord shards of one example kind (`retrieval` or `ranking`) and split, in shard order."""
    if split not in schema.SPLITS:
        raise schema.SchemaError(f"unknown split {split!r}; expected one of {schema.SPLITS}")
    files = sorted(str(p) for p in Path(features_dir, kind).glob(f"{split}-*.tfrecord"))
    if not files:
        raise schema.SchemaError(f"{features_dir}: no {kind} examples for split {split!r}")
    return files


def _parse_spec(kind: str) -> dict:
    names = schema.RETRIEVAL_FEATURES if kind == schema.RETRIEVAL_DIR else schema.RANKING_FEATURES
    spec = {}
    for name in names:
        if name in schema.SEQUENCE_FEATURES:
            spec[name] = tf.io.RaggedFeature(tf.int64)
        elif name == schema.LABEL:
            spec[name] = tf.io.FixedLenFeature([], tf.float32)
        else:
            spec[name] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def dataset(features_dir: str | Path, kind: str, split: str, batch_size: int) -> tf.data.Dataset:
    """Batches of parsed examples; sequence features are `tf.RaggedTensor`s, right-ragged, oldest first."""
    spec = _parse_spec(kind)
    files = tfrecord_files(features_dir, kind, split)
    return (
        tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
        .batch(batch_size)
        .map(lambda records: tf.io.parse_example(records, spec), num_parallel_calls=tf.data.AUTOTUNE)
    )


def load_numpy(features_dir: str | Path, kind: str, split: str) -> dict[str, np.ndarray]:
    """The whole split in memory: scalars as 1-D arrays, sequences as object arrays of int64 arrays.

    Evaluation and the baselines need every example at once (one per user on valid/test), so this
    trades generality for simple NumPy code.
    """
    columns: dict[str, list] = {}
    for batch in dataset(features_dir, kind, split, batch_size=4096):
        for name, value in batch.items():
            if isinstance(value, tf.RaggedTensor):
                columns.setdefault(name, []).extend(np.asarray(row) for row in value.to_list())
            else:
                columns.setdefault(name, []).extend(value.numpy().tolist())
    out = {}
    for name, values in columns.items():
        if name in schema.SEQUENCE_FEATURES:
            arr = np.empty(len(values), dtype=object)
            arr[:] = [np.asarray(v, dtype=np.int64) for v in values]
            out[name] = arr
        else:
            out[name] = np.asarray(values)
    return out


def pad_left(sequences, length: int | None = None) -> np.ndarray:
    """Stacks int sequences into a [n, length] matrix, padded with PAD_INDEX on the left.

    Left padding keeps the most recent item in the last column for every row.
    """
    length = length or max((len(s) for s in sequences), default=1) or 1
    out = np.full((len(sequences), length), schema.PAD_INDEX, dtype=np.int64)
    for row, seq in enumerate(sequences):
        seq = np.asarray(seq[-length:], dtype=np.int64)
        if len(seq):
            out[row, length - len(seq):] = seq
    return out
