"""Length-bucketed input: each batch padded to its own longest history, every row once per epoch."""

import json

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.ranking.data import bucketed_dataset, load_split, rows_in_order

from .synthetic import _example


def test_batches_cover_every_row_once_and_pad_only_to_their_longest(drifting_features):
    data = load_split(drifting_features, "train")
    lengths = data.lengths
    seen = []
    for features, labels in bucketed_dataset(data, batch_size=16, seed=3):
        hist = features[schema.HIST_ITEMS].numpy()
        real = (hist != schema.PAD_INDEX).sum(1)
        assert hist.shape[1] == real.max()  # no batch is padded past its own longest history
        assert features[schema.NOCLICK_ITEMS].shape == hist.shape
        seen.extend(zip(features[schema.USER].numpy(), real, labels.numpy()))
    assert len(seen) == data.size
    expected = sorted(zip(data.scalars[schema.USER], lengths, data.scalars[schema.LABEL]))
    assert sorted(seen) == expected


def test_seeded_epochs_reshuffle_and_repeat_across_datasets(drifting_features):
    data = load_split(drifting_features, "train")

    def first_batches(dataset, count=3):
        iterator = iter(dataset)
        return [next(iterator)[0][schema.USER].numpy().tolist() for _ in range(count)]

    dataset = bucketed_dataset(data, batch_size=16, seed=1)
    epoch_one, epoch_two = first_batches(dataset), first_batches(dataset)
    assert epoch_one != epoch_two
    assert first_batches(bucketed_dataset(data, batch_size=16, seed=1)) == epoch_one


def test_unseeded_order_is_reported_by_rows_in_order(drifting_features):
    data = load_split(drifting_features, "test")
    users = np.concatenate([f[schema.USER].numpy() for f, _ in bucketed_dataset(data, batch_size=7)])
    np.testing.assert_array_equal(users, data.scalars[schema.USER][rows_in_order(data, 7)])


def test_load_split_names_mismatched_noclick_lengths(tmp_path):
    (tmp_path / schema.RANKING_DIR).mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / schema.RANKING_DIR / "train-00000-of-00001.tfrecord")) as writer:
        writer.write(_example(2, [3, 4], [2, 2], [5], [2], 6, 2, 1.0))
    (tmp_path / schema.STATS).write_text(json.dumps({"examples": {schema.RANKING_DIR: {"train": 1}}}))
    with pytest.raises(schema.SchemaError, match="noclick_items differs in length"):
        load_split(tmp_path, "train")


def test_load_split_names_a_missing_split(tmp_path):
    with pytest.raises(schema.SchemaError, match="no ranking examples"):
        load_split(tmp_path, "valid")
