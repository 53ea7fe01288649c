"""Retrieval trained from the stream (config.train_input "stream"): the train split partitioned by user into buckets on
disk, one bucket in memory at a time. The same seed and data give the same model; the buckets hold every train
example once, whatever shards Beam wrote them to; every_position rebuilds each user's sequence within its bucket."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from components import schema
from components.features import reader
from tests.features.reshard import reshard_by_user_parity

BUCKET_ROWS = 1_500  # the shop's ~6k train examples in 4-5 buckets


def _config(**fields):
    from components.retrieval.config import RetrievalConfig

    base = dict(embedding_dim=16, max_len=10, batch_size=128, epochs=2, patience=2, seed=5)
    return RetrievalConfig(**{**base, "stream_bucket_rows": BUCKET_ROWS, **fields})


def _streamed(features, tmp_path, every_position=False, with_valid=False):
    from components.retrieval.data import load_catalogue, stream_examples
    from components.retrieval.training import example_keys

    catalogue = load_catalogue(features)
    return stream_examples(
        features,
        10,
        tmp_path,
        lambda examples: example_keys(features, examples, catalogue),
        BUCKET_ROWS,
        catalogue.item_category if every_position else None,
        with_valid,
    )


def _rows(examples) -> list[tuple]:
    gaps, target_gap = examples.gaps()
    return sorted(
        (int(u), int(t), int(g), tuple(h), tuple(c), tuple(hg))
        for u, t, g, h, c, hg in zip(
            examples.user, examples.target_item, target_gap, examples.hist_items, examples.hist_cats, gaps, strict=True
        )
    )


def test_buckets_hold_every_train_example_once_and_each_user_whole(shop_features, tmp_path):
    from components.retrieval.data import load_examples

    streamed = _streamed(shop_features, tmp_path)
    whole = load_examples(shop_features, "train", 10)
    assert len(streamed.paths) == reader.bucket_count(len(whole), BUCKET_ROWS) > 1
    buckets = [streamed.bucket(index) for index in range(len(streamed.paths))]
    assert sum(len(rows) for rows, _ in buckets) == len(whole) == len(streamed)
    assert sorted(row for rows, _ in buckets for row in _rows(rows)) == _rows(whole)
    users = [set(rows.user.tolist()) for rows, _ in buckets]
    assert sum(len(u) for u in users) == len(set().union(*users))  # no user in two buckets
    for rows, keys in buckets:  # canonical order within a bucket, keys aligned with the rows
        assert (np.diff(rows.user) >= 0).all() and len(keys) == len(rows)


def test_refit_buckets_hold_their_users_valid_rows_after_their_train_rows(shop_features, tmp_path):
    from components.retrieval.data import concatenate_examples, load_examples

    valid = load_examples(shop_features, "valid", 10)
    streamed = _streamed(shop_features, tmp_path, with_valid=True)
    whole = concatenate_examples(load_examples(shop_features, "train", 10), valid)
    buckets = [streamed.bucket(index)[0] for index in range(len(streamed.paths))]
    assert sorted(row for rows in buckets for row in _rows(rows)) == _rows(whole)
    users = [set(rows.user.tolist()) for rows in buckets]
    assert sum(len(u) for u in users) == len(set().union(*users))


def test_buckets_do_not_depend_on_the_shards_beam_wrote(shop_features, tmp_path):
    """The same examples in two shards, users in another order: the same buckets, row for row."""
    moved = tmp_path / "moved"
    shutil.copytree(shop_features, moved)
    reshard_by_user_parity(moved, schema.RETRIEVAL_DIR)
    first, second = _streamed(shop_features, tmp_path / "a"), _streamed(moved, tmp_path / "b")
    assert first.sizes == second.sizes
    for index in range(len(first.paths)):
        (a, a_keys), (b, b_keys) = first.bucket(index), second.bucket(index)
        np.testing.assert_array_equal(a_keys, b_keys)
        for name in ("hist_items", "hist_cats", "target_item", "user", "hist_gaps", "target_gap"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_every_position_sequences_per_bucket_are_the_whole_splits(shop_features, tmp_path):
    from components.retrieval.data import load_catalogue, load_examples, train_sequences

    streamed = _streamed(shop_features, tmp_path, every_position=True)
    whole = train_sequences(load_examples(shop_features, "train", 10), load_catalogue(shop_features).item_category)

    def rows(sequences):
        gaps, target_gap = sequences.gaps()
        return sorted(
            (tuple(h), tuple(c), tuple(t), tuple(g), int(r))
            for h, c, t, g, r in zip(
                sequences.hist_items, sequences.hist_cats, sequences.target_item, gaps, target_gap, strict=True
            )
        )

    assert sorted(r for i in range(len(streamed.paths)) for r in rows(streamed.bucket(i)[0])) == rows(whole)


@pytest.fixture(scope="module")
def streamed_twice(shop_features):
    from components.retrieval import training

    return [training.train_from_features(shop_features, _config(train_input="stream")) for _ in range(2)]


def test_the_stream_gives_one_model_per_seed(streamed_twice):
    first, second = streamed_twice
    assert first.history == second.history or [h["loss"] for h in first.history] == [h["loss"] for h in second.history]
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.valid_metrics == second.valid_metrics


def test_the_stream_trains_as_well_as_memory(shop_features, streamed_twice):
    from components.retrieval import training

    memory = training.train_from_features(shop_features, _config(train_input="memory"))
    streamed = streamed_twice[0]
    assert streamed.train_keys is not None and sorted(streamed.train_keys) == sorted(memory.train_keys)
    # each bucket's remainder below a batch is left out of an epoch: at most one batch per bucket
    assert memory.train_examples - streamed.train_examples < 128 * 5
    print("memory", memory.valid_metrics["ndcg@20"], "stream", streamed.valid_metrics["ndcg@20"])
    assert streamed.valid_metrics["ndcg@20"] == pytest.approx(memory.valid_metrics["ndcg@20"], abs=0.02)


def test_train_input_auto_streams_above_the_threshold():
    assert reader.train_input("auto", reader.STREAM_ABOVE) == "memory"
    assert reader.train_input("auto", reader.STREAM_ABOVE + 1) == "stream"
    assert reader.train_input("memory", 10**9) == "memory" and reader.train_input("stream", 1) == "stream"
    with pytest.raises(ValueError, match="train_input"):
        reader.train_input("disk", 1)
    assert reader.bucket_count(0) == 1 and reader.bucket_count(10, 3) == 4
    buckets = reader.user_bucket(np.arange(100_000), 7)
    assert set(buckets.tolist()) == set(range(7)) and np.bincount(buckets).min() > 13_000


def test_a_streamed_run_selects_on_the_same_valid_sample_without_reading_valid_whole(shop_features, monkeypatch):
    from components.metrics import sample_users
    from components.retrieval import data, training
    from components.retrieval.data import load_examples

    ids = schema.indexed_vocab(shop_features, schema.USER_VOCAB)
    valid = load_examples(shop_features, "valid", 10)
    rows = sample_users(ids[valid.user], 100)
    selection, targets = data.valid_selection(shop_features, ids, 100, 10)
    np.testing.assert_array_equal(targets, valid.target_item)
    assert len(valid) > 100 and len(selection) == 100
    for name in ("user", "target_item", "hist_items", "hist_cats", "hist_gaps", "target_gap"):
        np.testing.assert_array_equal(getattr(selection, name), getattr(valid, name)[rows])
    assert [list(s) for s in selection.seen_items] == [list(valid.seen_items[r]) for r in rows]
    whole, targets = data.valid_selection(shop_features, ids, 0, 10)
    assert np.array_equal(targets, valid.target_item) and np.array_equal(whole.target_item, valid.target_item)

    read, load = [], data.load_examples
    monkeypatch.setattr(data, "load_examples", lambda f, split, n: read.append(split) or load(f, split, n))
    monkeypatch.setattr(training, "load_examples", data.load_examples)
    result = training.train_from_features(
        shop_features, _config(train_input="stream", epochs=1, refit_epochs=1, valid_max_users=100)
    )
    assert read == []  # neither split read whole: train from its buckets, valid's sample and its buckets
    assert result.refit["valid_rows"] == len(valid) and result.valid_metrics["ndcg@20"] > 0
