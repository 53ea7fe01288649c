"""Near negatives (from the top of retrieval's list, the candidates the funnel re-ranks), far negatives from the ranks
below, rank-weighted draws, queries that read the rows' gaps, and the pointwise loss on chosen list columns."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.ranking import hard_negatives
from components.ranking.base import NEGATIVE_ITEMS
from components.ranking.training import TrainConfig, list_loss, training_set

from .test_hard_negatives import MeanRetriever, _data, _sequence, _steps


def _ranked(data, retriever, row):
    """The row's items best first by the retriever's score, without the target, its history and the user's buys."""
    users, targets = data.scalars[schema.USER], data.scalars[schema.TARGET_ITEM]
    history = _sequence(data, schema.HIST_ITEMS, row)
    scores = retriever.encode(history[None], history[None])[0] @ retriever.item_embeddings.T
    scores[:2] = -np.inf
    scores[np.concatenate([[targets[row]], history, targets[users == users[row]]])] = -np.inf
    return np.argsort(-scores, kind="stable")


def test_near_negatives_come_from_the_top_and_far_ones_from_the_ranks_below():
    rng = np.random.default_rng(4)
    num_items, near, near_pool, far, pool = 80, 2, 5, 3, 15
    data = _steps(_data(rng, num_items))
    retriever = MeanRetriever(rng.normal(size=(num_items, 6)))
    negatives = hard_negatives.hard_negative_lists(data, retriever, far, pool, seed=0, near=near, near_pool=near_pool)
    assert negatives.shape == (data.size, near + far)
    for row in range(data.size):
        ranked = _ranked(data, retriever, row)
        assert len(set(negatives[row])) == near + far
        assert set(negatives[row, :near]) <= set(ranked[:near_pool])
        assert set(negatives[row, near:]) <= set(ranked[near_pool:pool])


def _pool(data, retriever, pool):
    """(exclusions, pool as hard_negative_lists shrinks it, the unordered top-pool) of the rows."""
    hist = hard_negatives.left_padded(*data.sequences[schema.HIST_ITEMS])
    users, targets = data.scalars[schema.USER], data.scalars[schema.TARGET_ITEM]
    bought = hard_negatives.user_train_items(users, targets, len(targets), users)
    exclude = np.concatenate([targets[:, None], hist, bought], axis=1)
    pool = min(pool, len(retriever.item_embeddings) - schema.NUM_RESERVED - hard_negatives.most_distinct_items(exclude))
    return pool, hard_negatives.top_candidates(retriever.encode(hist, hist), retriever.item_embeddings, exclude, pool)


def test_without_near_negatives_the_lists_are_drawn_as_before():
    """near=0 keeps the one-pool draw (same entries for the same seed), so the old default stays reproducible."""
    rng = np.random.default_rng(5)
    data = _steps(_data(rng, 60))
    retriever = MeanRetriever(rng.normal(size=(60, 6)))
    _, candidates = _pool(data, retriever, 8)
    expected = hard_negatives.sample_columns(candidates, 2, np.random.default_rng([3, 7]))
    np.testing.assert_array_equal(hard_negatives.hard_negative_lists(data, retriever, 2, 8, seed=3), expected)


def test_a_small_catalogue_shrinks_the_near_pool_to_leave_room_for_the_far_draws():
    rng = np.random.default_rng(6)
    num_items = 30
    data = _steps(_data(rng, num_items))
    retriever = MeanRetriever(rng.normal(size=(num_items, 6)))
    pool, _ = _pool(data, retriever, 10_000)
    negatives = hard_negatives.hard_negative_lists(data, retriever, 1, 10_000, seed=0, near=1, near_pool=10_000)
    assert negatives.shape == (data.size, 2)
    for row in range(data.size):
        ranked = _ranked(data, retriever, row)
        assert negatives[row, 0] in ranked[: pool - 1] and negatives[row, 1] == ranked[pool - 1]
    with pytest.raises(ValueError, match="too small"):
        hard_negatives.hard_negative_lists(data, retriever, 1, 10_000, seed=0, near=pool, near_pool=10_000)


def test_rank_sampling_draws_each_column_in_proportion_to_one_over_its_rank():
    pool, rows = 5, 60_000
    candidates = np.tile(np.arange(pool), (rows, 1))
    weights = hard_negatives.rank_weights(pool, "rank")
    np.testing.assert_allclose(weights, [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    picks = hard_negatives.sample_columns(candidates, 1, np.random.default_rng(0), weights)[:, 0]
    share = np.bincount(picks, minlength=pool) / rows
    np.testing.assert_allclose(share, weights / weights.sum(), atol=0.01)
    uniform = hard_negatives.sample_columns(candidates, 1, np.random.default_rng(0))[:, 0]
    np.testing.assert_allclose(np.bincount(uniform, minlength=pool) / rows, 1 / pool, atol=0.01)
    two = hard_negatives.sample_columns(candidates[:500], 2, np.random.default_rng(1), weights)
    assert (two[:, 0] != two[:, 1]).all()
    assert hard_negatives.rank_weights(pool, "uniform") is None
    with pytest.raises(ValueError, match="near_sampling"):
        hard_negatives.rank_weights(pool, "popular")
    with pytest.raises(ValueError, match="positive"):
        hard_negatives.sample_columns(candidates[:2], 1, np.random.default_rng(0), np.zeros(pool))


def test_ordered_top_candidates_come_best_first():
    embeddings = np.array([[0.0], [0.0], [1.0], [3.0], [2.0], [3.0]], np.float32)
    queries = np.array([[1.0], [-1.0]], np.float32)
    exclude = np.full((2, 1), schema.PAD_INDEX)
    got = hard_negatives.top_candidates(queries, embeddings, exclude, 4, ordered=True)
    assert got.tolist() == [[3, 5, 4, 2], [2, 4, 3, 5]]  # ties (3 and 5 score 3): the lower index first


class GapRetriever(MeanRetriever):
    """A retriever that reads time: records the behaviour its queries were handed."""

    reads_gaps = True

    def __init__(self, item_embeddings):
        super().__init__(item_embeddings)
        self.seen = []

    def encode(self, hist_items_idx, hist_cats_idx, behaviour=None):
        self.seen.append((hist_items_idx.copy(), behaviour))
        return super().encode(hist_items_idx, hist_cats_idx)


def _with_behaviour(data):
    """Each step's gap is 100 x its item, its type the item modulo 4, the request gap 7 x the target."""
    values, offsets = data.sequences[schema.HIST_ITEMS]
    data.sequences[schema.HIST_GAPS] = (values * 100, offsets)
    data.sequences[schema.HIST_TYPES] = (values % 4, offsets)
    data.scalars[schema.TARGET_GAP] = data.scalars[schema.TARGET_ITEM] * 7
    return data


def test_queries_read_the_rows_gaps_only_when_asked():
    rng = np.random.default_rng(7)
    data = _with_behaviour(_steps(_data(rng, 60)))
    retriever = GapRetriever(rng.normal(size=(60, 6)))
    hard_negatives.hard_negative_lists(data, retriever, 2, 8, seed=0, gaps=True)
    (hist, behaviour) = retriever.seen[-1]
    padded = hist == schema.PAD_INDEX
    np.testing.assert_array_equal(behaviour.gaps, np.where(padded, schema.NO_GAP, hist * 100))
    np.testing.assert_array_equal(behaviour.types, np.where(padded, 0, hist % 4))
    # rows reach the encoder by history length; the request gap follows its row: 7 x the row's target
    order = np.argsort((hard_negatives.left_padded(*data.sequences[schema.HIST_ITEMS]) != 0).sum(1), kind="stable")
    np.testing.assert_array_equal(behaviour.request_gap, data.scalars[schema.TARGET_ITEM][order] * 7)
    hard_negatives.hard_negative_lists(data, retriever, 2, 8, seed=0)
    assert retriever.seen[-1][1] is None


def test_list_loss_reads_only_the_pointwise_columns_in_its_log_loss():
    logits, labels = tf.constant([[2.0, 0.0, 1.0], [1.0, -1.0, 3.0]]), tf.constant([1.0, 1.0])

    def log_loss(label, logit):
        p = 1 / (1 + math.exp(-logit))
        return -math.log(p) if label else -math.log(1 - p)

    # column 1 (a near negative) is left out of the log loss: (target, column 2) per row
    pointwise = (log_loss(1, 2.0) + log_loss(0, 1.0) + log_loss(1, 1.0) + log_loss(0, 3.0)) / 4
    listwise = (
        -(
            (2.0 - math.log(math.exp(2.0) + math.exp(0.0) + math.exp(1.0)))
            + (1.0 - math.log(math.exp(1.0) + math.exp(-1.0) + math.exp(3.0)))
        )
        / 2
    )
    got = list_loss(logits, labels, 1.0, (True, False, True))
    assert float(got) == pytest.approx(pointwise + listwise, rel=1e-5)
    assert float(list_loss(logits, labels, 1.0, (True, True, True))) == pytest.approx(
        float(list_loss(logits, labels, 1.0)), rel=1e-6
    )


class LastItemRetriever:
    """The drifting shop's retriever stand-in: query = the last item's embedding."""

    def __init__(self, num_items, seed=0):
        self.item_embeddings = np.random.default_rng(seed).normal(size=(num_items, 4)).astype(np.float32)

    def encode(self, hist_items_idx, hist_cats_idx):
        return self.item_embeddings[hist_items_idx[:, -1]]


def test_training_set_lists_are_near_far_popular_and_mark_the_near_columns_out_of_the_log_loss(drifting_features):
    spec = schema.FeatureSpec.read(drifting_features)
    retriever = LastItemRetriever(spec.num_items)
    config = TrainConfig(near_negatives=2, near_pool=4, hard_negatives=1, hard_negative_pool=12, near_pointwise=False)
    train = training_set(str(drifting_features), config, None, retriever)
    lists = train.data.lists[NEGATIVE_ITEMS]
    assert lists.shape == (train.data.size, 4)
    assert train.data.pointwise_columns == (True, False, False, True, True)
    hist = hard_negatives.left_padded(*train.data.sequences[schema.HIST_ITEMS])
    scores = retriever.encode(hist, hist) @ retriever.item_embeddings.T
    # the near columns outscore the far one in the retriever's order (both drawn from the same ranked pool)
    rows = np.arange(train.data.size)
    assert (scores[rows, lists[:, 0]] >= scores[rows, lists[:, 2]]).all()
    assert (scores[rows, lists[:, 1]] >= scores[rows, lists[:, 2]]).all()
    pointwise_all = training_set(
        str(drifting_features), dataclasses.replace(config, near_pointwise=True), None, retriever
    )
    assert pointwise_all.data.pointwise_columns is None
    no_retriever = training_set(str(drifting_features), config, None)
    assert no_retriever.data.lists[NEGATIVE_ITEMS].shape[1] == 1 and no_retriever.data.pointwise_columns is None


def test_train_config_refuses_more_near_negatives_than_the_near_pool():
    with pytest.raises(ValueError, match="near_negatives"):
        TrainConfig(near_negatives=3, near_pool=2)
    with pytest.raises(ValueError, match="near_negatives"):
        TrainConfig(near_negatives=-1)
