"""The ranker trained from the stream (TrainConfig.train_input "stream"): the train split partitioned by user into
buckets on disk, each bucket's hard negatives drawn for it alone, one bucket in memory at a time. Every real step is
in one epoch once, the buckets do not depend on Beam's shards, the same seed gives the same model, and the stream
trains about as well as memory."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.features import reader
from components.ranking.base import NEGATIVE_CATS, NEGATIVE_ITEMS, ModelConfig
from components.ranking.data import RankingData, StreamedRanking, load_split
from components.ranking.export import item_category_table
from components.ranking.training import TrainConfig, build_model, train, training_set
from tests.features.reshard import reshard_by_user_parity

from .test_near_negatives import LastItemRetriever

BUCKET_ROWS = 600  # the drifting shop's 2,868 train rows in 5 buckets
CONFIG = TrainConfig(
    epochs=2, seed=3, near_negatives=1, near_pool=4, hard_negative_pool=12, stream_bucket_rows=BUCKET_ROWS
)


def _set(features, train_input, config=CONFIG):
    retriever = LastItemRetriever(schema.FeatureSpec.read(features).num_items)
    return training_set(str(features), dataclasses.replace(config, train_input=train_input), None, retriever)


def _rows(features: dict, labels) -> list[tuple]:
    """(user, target, label, history) of each row of a batch (histories without their right padding)."""
    hist = np.asarray(features[schema.HIST_ITEMS])
    return [
        (int(u), int(t), float(y), tuple(h[h != schema.PAD_INDEX].tolist()))
        for u, t, y, h in zip(
            np.asarray(features[schema.USER]), np.asarray(features[schema.TARGET_ITEM]), np.asarray(labels), hist
        )
    ]


def _memory_rows(data: RankingData) -> list[tuple]:
    values, offsets = data.sequences[schema.HIST_ITEMS]
    return [
        (int(u), int(t), float(y), tuple(values[offsets[i] : offsets[i + 1]].tolist()))
        for i, (u, t, y) in enumerate(
            zip(data.scalars[schema.USER], data.scalars[schema.TARGET_ITEM], data.scalars[schema.LABEL])
        )
    ]


@pytest.fixture(scope="module")
def streamed(drifting_features):
    return _set(drifting_features, "stream")


def test_an_epoch_of_the_stream_holds_every_real_step_once(drifting_features, streamed):
    memory = _set(drifting_features, "memory")
    assert isinstance(streamed.data, StreamedRanking) and isinstance(memory.data, RankingData)
    assert len(streamed.data.paths) == reader.bucket_count(2868, BUCKET_ROWS) == 5
    epochs = []
    dataset = streamed.data.dataset(batch_size=32, seed=CONFIG.seed)
    for _ in range(2):
        rows, lists = [], []
        for features, labels in dataset:
            rows += _rows(features, labels)
            lists.append(features[NEGATIVE_ITEMS].numpy())
        assert sorted(rows) == sorted(_memory_rows(memory.data))
        assert {batch.shape[1] for batch in lists} == {3}  # near, far, popular
        epochs.append(rows)
    assert epochs[0] != epochs[1]  # another order each epoch
    buckets = [streamed.data.bucket(index) for index in range(len(streamed.data.paths))]
    item_category = item_category_table(str(drifting_features), schema.FeatureSpec.read(drifting_features).num_items)
    users = [set(bucket.scalars[schema.USER].tolist()) for bucket in buckets]
    assert sum(len(u) for u in users) == len(set().union(*users))  # no user in two buckets
    for bucket in buckets:  # a user's buys anywhere in the split are never its negatives, as in memory
        negatives = bucket.lists[NEGATIVE_ITEMS][:, :2]
        for user in set(bucket.scalars[schema.USER].tolist()):
            mine = bucket.scalars[schema.USER] == user
            assert not np.isin(negatives[mine], bucket.scalars[schema.TARGET_ITEM][mine]).any()
        np.testing.assert_array_equal(bucket.lists[NEGATIVE_CATS], item_category[bucket.lists[NEGATIVE_ITEMS]])
    assert streamed.data.pointwise_columns == memory.data.pointwise_columns == (True, False, True, True)


def test_the_streamed_statistics_are_the_whole_splits(drifting_features, streamed):
    memory = _set(drifting_features, "memory")
    for name in ("pair_keys", "pair_counts", "out_degree", "target_counts", "brand"):
        np.testing.assert_array_equal(getattr(streamed.statistics, name), getattr(memory.statistics, name))


def test_the_buckets_do_not_depend_on_the_shards_beam_wrote(drifting_features, streamed, tmp_path):
    """The same records as two shards, users in another order: the same buckets and lists, row for row."""
    moved = tmp_path / "moved"
    shutil.copytree(drifting_features, moved)
    reshard_by_user_parity(moved, schema.RANKING_DIR)
    again = _set(moved, "stream")
    assert again.data.sizes == streamed.data.sizes
    for index in range(len(streamed.data.paths)):
        a, b = streamed.data.bucket(index), again.data.bucket(index)
        for name in a.scalars:
            np.testing.assert_array_equal(a.scalars[name], b.scalars[name])
        for name in a.sequences:
            np.testing.assert_array_equal(a.sequences[name][0], b.sequences[name][0])
        for name in a.lists:
            np.testing.assert_array_equal(a.lists[name], b.lists[name])


def _trained(features, train_set):
    spec = schema.FeatureSpec.read(features)
    tf.keras.utils.set_random_seed(CONFIG.seed)
    model = build_model(ModelConfig(model_type="din"), spec.num_items, spec.num_categories, train_set.statistics)
    return model, train(model, train_set.data, CONFIG, load_split(features, "valid"))


def test_the_stream_trains_twice_to_the_same_weights_and_as_well_as_memory(drifting_features, streamed):
    first, first_result = _trained(drifting_features, streamed)
    second, second_result = _trained(drifting_features, _set(drifting_features, "stream"))
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first_result["loss_by_epoch"] == second_result["loss_by_epoch"]
    _, memory_result = _trained(drifting_features, _set(drifting_features, "memory"))
    print("valid AUC memory", memory_result["valid_auc"], "stream", first_result["valid_auc"])
    assert first_result["valid_auc"] == pytest.approx(memory_result["valid_auc"], abs=0.05)


def test_auto_streams_above_the_threshold(drifting_features, monkeypatch):
    monkeypatch.setattr(reader, "STREAM_ABOVE", 2868)
    assert isinstance(_set(drifting_features, "auto").data, RankingData)
    monkeypatch.setattr(reader, "STREAM_ABOVE", 2867)
    assert isinstance(_set(drifting_features, "auto").data, StreamedRanking)
    with pytest.raises(ValueError, match="train_input"):
        TrainConfig(train_input="disk")


def _bucket_rows(data: StreamedRanking) -> list[list[tuple]]:
    return [_memory_rows(data.bucket(index)) for index in range(len(data.paths))]


def test_a_streamed_split_s_refit_steps_are_valid_s_in_the_train_split_s_user_buckets(drifting_features, streamed):
    """Beside a streamed train split, valid's steps are streamed too: the same steps and counts as in memory, bucket b
    of valid holding users of train's bucket b only, their lists drawn apart from every train bucket's."""
    memory = _set(drifting_features, "memory")
    refit = streamed.refit.data
    assert isinstance(refit, StreamedRanking) and isinstance(memory.refit.data, RankingData)
    assert sorted(row for rows in _bucket_rows(refit) for row in rows) == sorted(_memory_rows(memory.refit.data))
    for name in ("pair_keys", "pair_counts", "out_degree", "target_counts"):
        np.testing.assert_array_equal(getattr(streamed.refit.statistics, name), getattr(memory.refit.statistics, name))
    buckets = reader.bucket_count(2868, BUCKET_ROWS)
    for data, base in ((streamed.data, 0), (refit, 1 << 30)):
        for index, key in enumerate(data.buckets):
            bucket = data.bucket(index)
            assert set(reader.user_bucket(bucket.scalars[schema.USER], buckets).tolist()) == {key - base}
            assert bucket.lists[NEGATIVE_ITEMS].shape == (bucket.size, 3)
    assert refit.pointwise_columns == streamed.data.pointwise_columns


def test_the_refit_of_a_streamed_split_replays_a_share_of_every_bucket_beside_the_valid_steps(
    drifting_features, streamed
):
    """refit_rows beside streamed valid steps: buckets on disk holding every valid step once and the same replay draw
    of train rows, with the same lists, as the refit of the same train buckets beside valid steps in memory."""
    from components.ranking.training import RefitSteps, refit_rows

    rows = refit_rows(streamed, 0.25, seed=3)
    assert isinstance(rows, StreamedRanking)
    valid = {row for bucket in _bucket_rows(streamed.refit.data) for row in bucket}
    every_train_row = {row for bucket in _bucket_rows(streamed.data) for row in bucket}
    streamed_rows = [row for bucket in _bucket_rows(rows) for row in bucket]
    replayed = [row for row in streamed_rows if row not in valid]
    assert valid <= set(streamed_rows) and len(streamed_rows) == rows.size == len(valid) + len(replayed)
    assert len(replayed) == sum(round(0.25 * size) for size in streamed.data.sizes) and len(set(replayed)) == len(
        replayed
    )
    assert set(replayed) <= every_train_row
    memory_refit = _set(drifting_features, "memory").refit
    in_memory = refit_rows(
        dataclasses.replace(streamed, refit=RefitSteps(memory_refit.data, memory_refit.statistics)), 0.25, 3
    )
    assert sorted(replayed) == sorted(_memory_rows(in_memory)[memory_refit.data.size :])
    train_lists = {}
    for index in range(len(streamed.data.paths)):
        bucket = streamed.data.bucket(index)
        train_lists.update(zip(_memory_rows(bucket), map(tuple, bucket.lists[NEGATIVE_ITEMS].tolist()), strict=True))
    for index in range(len(rows.paths)):
        bucket = rows.bucket(index)
        for row, negatives in zip(_memory_rows(bucket), bucket.lists[NEGATIVE_ITEMS].tolist(), strict=True):
            if row not in valid:
                assert train_lists[row] == tuple(negatives)  # a replayed row keeps the list it trained with
    assert rows.pointwise_columns == streamed.data.pointwise_columns
    assert [row for bucket in _bucket_rows(refit_rows(streamed, 0.25, seed=3)) for row in bucket] == streamed_rows


def test_a_chunked_split_is_load_split_s_rows_and_scores_as_it(drifting_features):
    """SplitChunks (valid and test where the ranker streams): its chunks are load_split's rows in order, and training's
    validation and evaluate give on it what they give on the split in memory."""
    from components.ranking.data import SplitChunks
    from components.ranking.training import evaluate, evaluation_split

    whole = load_split(drifting_features, "test")
    chunked = SplitChunks(str(drifting_features), "test", chunk_rows=100)
    chunks = list(chunked.chunks())
    assert len(chunks) > 2 and chunked.size == whole.size
    assert [row for chunk in chunks for row in _memory_rows(chunk)] == _memory_rows(whole)
    assert sorted(chunked.labels().tolist()) == sorted(whole.scalars[schema.LABEL].tolist())
    config = dataclasses.replace(CONFIG, train_input="stream")
    assert isinstance(evaluation_split(str(drifting_features), "valid", config), SplitChunks)
    assert isinstance(evaluation_split(str(drifting_features), "valid", TrainConfig(train_input="auto")), RankingData)
    spec = schema.FeatureSpec.read(drifting_features)
    tf.keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(model_type="din"), spec.num_items, spec.num_categories)
    train_data = load_split(drifting_features, "train")
    memory_config = TrainConfig(epochs=2, batch_size=64, seed=0)
    by_memory = train(model, train_data, memory_config, load_split(drifting_features, "valid"))
    tf.keras.utils.set_random_seed(0)
    again = build_model(ModelConfig(model_type="din"), spec.num_items, spec.num_categories)
    by_chunks = train(again, train_data, memory_config, SplitChunks(str(drifting_features), "valid", chunk_rows=100))
    np.testing.assert_allclose(by_chunks["valid_auc_by_epoch"], by_memory["valid_auc_by_epoch"], atol=1e-6)
    from_memory, from_chunks = evaluate(model, whole, with_scores=True), evaluate(model, chunked, with_scores=True)
    for name in ("auc", "gauc", "logloss"):
        assert from_chunks[name] == pytest.approx(from_memory[name], abs=1e-6)
    np.testing.assert_allclose(from_chunks["test_scores"], from_memory["test_scores"], atol=1e-6)
    np.testing.assert_array_equal(from_chunks["test_users"], whole.scalars[schema.USER])
    np.testing.assert_array_equal(from_chunks["test_labels"], whole.scalars[schema.LABEL])


def test_a_chunked_split_without_rows_is_refused_by_name(drifting_features, tmp_path):
    """A whole but empty test split (one empty shard, the manifest's count 0) is a SchemaError naming it, not a
    test AUC over no rows."""
    import json

    from components.ranking.data import SplitChunks

    features = shutil.copytree(drifting_features, tmp_path / "features")
    for shard in (features / schema.RANKING_DIR).glob("test-*.tfrecord"):
        shard.unlink()
    (features / schema.RANKING_DIR / "test-00000-of-00001.tfrecord").write_bytes(b"")
    stats = json.loads((features / schema.STATS).read_text())
    stats["examples"][schema.RANKING_DIR]["test"] = 0
    (features / schema.STATS).write_text(json.dumps(stats))
    chunked = SplitChunks(str(features), "test", chunk_rows=100)
    assert chunked.size == 0
    with pytest.raises(schema.SchemaError, match="ranking/test.*has no examples"):
        list(chunked.chunks())


def test_the_stage_streams_train_valid_test_and_the_refit(drifting_features, tmp_path):
    """ranking.stage with train_input "stream": the train split and the refit from user buckets, valid and test
    scored a chunk at a time; the artifact records the keys of every row trained on, valid's steps included."""
    from components.ranking import stage, warm_start

    metrics = stage.run(
        str(drifting_features), str(tmp_path / "ranker"), "din", 1, 0, train_input="stream", refit_epochs=1
    )
    assert 0.5 < metrics["auc"] <= 1 and metrics["refit_valid_rows"] > 0
    parent = warm_start.Parent.load(tmp_path / "ranker")
    memory = _set(drifting_features, "memory")
    keys = warm_start.trained_keys(
        str(drifting_features), warm_start.row_keys(str(drifting_features), memory.data), memory
    )
    assert sorted(parent.train_keys.tolist()) == sorted(keys.tolist())
