"""The ranker's refit through valid: the selected model trains on on the valid steps plus a replay share of train, the
served (and tested) model is the refit one, and the funnel's fusion weight is chosen with the selected one."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.ranking import stage, training, warm_start
from components.ranking.base import NEGATIVE_CATS, NEGATIVE_ITEMS, ModelConfig
from components.ranking.data import SCALARS, SEQUENCES, RankingData, concatenate, load_split
from components.ranking.export import load_ranker

from .test_fusion_weight import CategoryRetriever


def _rows(targets: list[int], negatives: int = 2) -> RankingData:
    """One row per target: a history of (target - 1, target - 2, ...) as long as its position + 1, and negatives
    (100 + target, 200 + target, ...)."""
    lengths = np.arange(1, len(targets) + 1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate([t - 1 - np.arange(n) for t, n in zip(targets, lengths)]).astype(np.int64)
    scalars = {name: np.asarray(targets, np.int64) for name in SCALARS}
    scalars[schema.LABEL] = np.ones(len(targets), np.float32)
    listed = np.stack([100 * (k + 1) + np.asarray(targets) for k in range(negatives)], axis=1)
    return RankingData(
        scalars,
        {name: (values.copy(), offsets.copy()) for name in SEQUENCES},
        {NEGATIVE_ITEMS: listed, NEGATIVE_CATS: listed + 1},
        (True, False, True)[: negatives + 1],
    )


def _histories(data: RankingData) -> list[list[int]]:
    values, offsets = data.sequences[schema.HIST_ITEMS]
    return [values[offsets[i] : offsets[i + 1]].tolist() for i in range(data.size)]


def test_concatenated_rows_keep_each_part_s_histories_scalars_and_lists():
    first, second = _rows([10, 20]), _rows([30, 40, 50])
    both = concatenate([first, second])
    assert both.size == 5 and both.pointwise_columns == (True, False, True)
    assert both.scalars[schema.TARGET_ITEM].tolist() == [10, 20, 30, 40, 50]
    assert _histories(both) == _histories(first) + _histories(second)
    assert both.lists[NEGATIVE_ITEMS][:, 0].tolist() == [110, 120, 130, 140, 150]
    np.testing.assert_array_equal(both.lists[NEGATIVE_CATS], both.lists[NEGATIVE_ITEMS] + 1)
    with pytest.raises(ValueError, match="columns"):
        concatenate([first, _rows([60], negatives=1)])


def test_refit_rows_are_every_valid_step_then_a_seeded_replay_share_of_train():
    train_rows, valid_rows = _rows(list(range(10, 30))), _rows([1000, 1001, 1002])
    train_set = training.TrainingSet(train_rows, object(), training.RefitSteps(valid_rows, object()))
    rows = training.refit_rows(train_set, 0.25, seed=4)
    targets = rows.scalars[schema.TARGET_ITEM].tolist()
    assert targets[:3] == [1000, 1001, 1002]  # every valid step, first
    replayed = targets[3:]
    assert len(replayed) == 5 and len(set(replayed)) == 5 and set(replayed) <= set(range(10, 30))
    assert replayed == sorted(replayed)
    assert _histories(rows)[3:] == [list(range(t - 1, t - 1 - (t - 10) - 1, -1)) for t in replayed]
    assert rows.lists[NEGATIVE_ITEMS][3:, 0].tolist() == [100 + t for t in replayed]
    again = training.refit_rows(train_set, 0.25, seed=4).scalars[schema.TARGET_ITEM].tolist()
    assert again == targets  # seeded
    draws = {tuple(training.refit_rows(train_set, 0.25, seed=s).scalars[schema.TARGET_ITEM]) for s in range(8)}
    assert len(draws) > 1


def test_training_set_lists_the_valid_steps_for_the_refit_and_counts_them(drifting_features):
    config = training.TrainConfig(hard_negatives=1, hard_negative_pool=3, popularity_negatives=1)
    train_set = training.training_set(str(drifting_features), config, None, CategoryRetriever())
    valid = load_split(drifting_features, "valid")
    steps = valid.scalars[schema.LABEL] == 1  # the next-item task's real steps: the positives
    refit = train_set.refit
    assert refit.data.size == int(steps.sum())
    assert refit.data.scalars[schema.TARGET_ITEM].tolist() == valid.scalars[schema.TARGET_ITEM][steps].tolist()
    assert refit.data.lists[NEGATIVE_ITEMS].shape == (refit.data.size, train_set.data.lists[NEGATIVE_ITEMS].shape[1])
    assert refit.data.pointwise_columns == train_set.data.pointwise_columns
    counts = np.bincount(refit.data.scalars[schema.TARGET_ITEM], minlength=len(refit.statistics.target_counts))
    np.testing.assert_array_equal(refit.statistics.target_counts, train_set.statistics.target_counts + counts)
    no_refit = dataclasses.replace(config, refit_epochs=0)
    assert training.training_set(str(drifting_features), no_refit, None, CategoryRetriever()).refit is None


def test_a_valid_split_already_read_gives_the_same_refit_steps_without_reading_it_again(drifting_features, monkeypatch):
    config = training.TrainConfig(hard_negatives=1, hard_negative_pool=3, popularity_negatives=1)
    read = training.training_set(str(drifting_features), config, None, CategoryRetriever()).refit
    valid = load_split(drifting_features, "valid")
    splits = []
    monkeypatch.setattr(
        training, "load_split", lambda features_dir, split: splits.append(split) or load_split(features_dir, split)
    )
    given = training.training_set(str(drifting_features), config, None, CategoryRetriever(), valid).refit
    assert splits == ["train"]
    for column in (schema.TARGET_ITEM, schema.USER):
        np.testing.assert_array_equal(given.data.scalars[column], read.data.scalars[column])
    np.testing.assert_array_equal(given.data.lists[NEGATIVE_ITEMS], read.data.lists[NEGATIVE_ITEMS])
    np.testing.assert_array_equal(given.statistics.target_counts, read.statistics.target_counts)


def test_copy_learned_copies_the_weights_but_not_the_context_counts(drifting_features):
    config = training.TrainConfig(epochs=1, batch_size=64)
    train_set = training.training_set(str(drifting_features), config, None)
    spec = schema.FeatureSpec.read(drifting_features)
    source, target = (
        training.build_model(ModelConfig(model_type="din"), spec.num_items, spec.num_categories, statistics)
        for statistics in (train_set.statistics, train_set.refit.statistics)
    )
    for model in (source, target):
        model(training._example_features(), training=False)
    warm_start.copy_learned(source, target)
    for into, value in zip(warm_start._others(target), warm_start._others(source), strict=True):
        np.testing.assert_array_equal(into.numpy(), value.numpy())
    np.testing.assert_array_equal(target.embedding.items.embeddings.numpy(), source.embedding.items.embeddings.numpy())
    context = [w.numpy() for w in target.context.weights]
    assert any(not np.array_equal(t, s.numpy()) for t, s in zip(context, source.context.weights))


def _score_batch(ranker, features_dir):
    valid = load_split(features_dir, "valid")
    values, offsets = valid.sequences[schema.HIST_ITEMS]
    rows = range(8)
    hist = np.zeros((8, 5), np.int64)
    for r in rows:
        history = values[offsets[r] : offsets[r + 1]][-5:]
        hist[r, 5 - len(history) :] = history
    candidates = np.tile(np.arange(schema.NUM_RESERVED, schema.NUM_RESERVED + 6), (8, 1))
    return ranker.score(hist, ranker.item_category[hist], candidates, ranker.item_category[candidates])


@pytest.mark.parametrize("refit_epochs", [2, 0])
def test_the_stage_serves_the_refit_ranker_and_fuses_with_the_selected_one(
    drifting_features, tmp_path, monkeypatch, refit_epochs
):
    import components.retrieval.model_io as model_io

    monkeypatch.setattr(model_io, "load_retriever", lambda path: CategoryRetriever())
    monkeypatch.setattr(model_io, "load_valid_retriever", lambda path: CategoryRetriever())
    monkeypatch.setattr(stage, "TrainConfig", lambda **kw: training.TrainConfig(**kw, hard_negative_pool=3))
    fused = []
    choose = training.choose_on_split
    monkeypatch.setattr(
        training, "choose_on_split", lambda r, ranker, *a: fused.append(ranker) or choose(r, ranker, *a)
    )
    out = tmp_path / "model"
    figures = stage.run(
        str(drifting_features), str(out), "din", 1, 0, retrieval_model="retrieval", refit_epochs=refit_epochs
    )
    served = load_ranker(out)
    valid_steps, train_steps = (
        int((load_split(drifting_features, split).scalars[schema.LABEL] == 1).sum()) for split in ("valid", "train")
    )
    keys = warm_start.Parent.load(out).train_keys
    differs = not np.allclose(_score_batch(fused[0], drifting_features), _score_batch(served, drifting_features))
    tf.keras.backend.clear_session()
    if refit_epochs:
        assert figures["refit_valid_rows"] == valid_steps and figures["refit_rows"] > valid_steps
        assert figures["train_s"] >= figures["refit_s"] > 0
        assert differs  # the weight was chosen with the model selected on valid, not the one trained on it
        assert len(keys) == train_steps + valid_steps  # tomorrow's parent has trained on the valid steps too
    else:
        assert "refit_rows" not in figures
        assert not differs  # without a refit the selected model is the served one
        assert len(keys) == train_steps
