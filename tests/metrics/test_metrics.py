"""Hand-computed cases for the one metrics module."""

import math

import numpy as np
import pytest

from components import metrics


def test_rank_counts_strictly_higher_and_masks_seen_and_reserved():
    # columns 0, 1 are PAD/OOV and never count; user 0's seen item 3 is masked.
    scores = np.array(
        [
            [9.0, 9.0, 0.5, 0.9, 0.1, 0.7],  # target 4 (0.1): higher = 2 (0.5, 0.7), 0.9 is seen
            [9.0, 9.0, 0.5, 0.9, 0.1, 0.7],  # target 3 (0.9): nothing unmasked is higher
        ]
    )
    ranks = metrics.target_ranks(scores, np.array([4, 3]), [np.array([3]), np.array([], np.int64)])
    assert ranks.higher.tolist() == [2, 0]
    assert ranks.ties.tolist() == [0, 0]
    assert scores[0, 3] == 0.9  # input untouched


def test_target_in_seen_is_not_masked():
    scores = np.array([[0.0, 0.0, 0.2, 0.8, 0.5]])
    ranks = metrics.target_ranks(scores, np.array([3]), [np.array([2, 3])])
    assert ranks.higher.tolist() == [0]


def test_hit_ndcg_mrr_without_ties():
    ranks = metrics.Ranks.exact([0, 4, 5, 30])
    m = metrics.ranking_metrics(ranks, ks=(5, 50))
    assert m["hit@5"] == pytest.approx(2 / 4)
    assert m["hit@50"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert m["ndcg@50"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(7) + 1 / math.log2(32)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 6 + 1 / 31) / 4)


def test_ties_are_expected_value_of_random_order():
    # target ties with 3 other items and 3 items are higher: position uniform on {3, 4, 5, 6}.
    scores = np.array([[0.0, 0.0, 0.9, 0.9, 0.9, 0.4, 0.4, 0.4, 0.4, 0.1]])
    ranks = metrics.target_ranks(scores, np.array([5]))
    assert (ranks.higher[0], ranks.ties[0]) == (3, 3)
    m = metrics.ranking_metrics(ranks, ks=(5,))
    assert m["hit@5"] == pytest.approx(2 / 4)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(6)) / 4)
    assert m["mrr"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 6 + 1 / 7) / 4)


def test_constant_scores_give_chance_level_not_perfect():
    num_items = 102  # 100 real items
    scores = np.zeros((1, num_items))
    m = metrics.full_catalogue_metrics(scores, np.array([7]), ks=(20,))
    assert m["hit@20"] == pytest.approx(20 / 100)


def test_chunked_ranks_equal_unchunked():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(37, 50)).astype(np.float32)
    targets = rng.integers(2, 50, size=37)
    seen = [rng.choice(np.arange(2, 50), size=rng.integers(0, 5), replace=False) for _ in range(37)]
    whole = metrics.target_ranks(scores, targets, seen)
    chunked = metrics.ranks_in_chunks(lambda a, b: scores[a:b], targets, seen, 50, max_cells=50 * 4)
    np.testing.assert_array_equal(whole.higher, chunked.higher)
    np.testing.assert_array_equal(whole.ties, chunked.ties)
    # an independent computation with a Python loop
    for u in range(37):
        allowed = [i for i in range(2, 50) if i == targets[u] or i not in set(seen[u])]
        assert whole.higher[u] == sum(scores[u, i] > scores[u, targets[u]] for i in allowed)


def test_bad_scores_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        metrics.target_ranks(np.array([[0, 0, np.nan]]), np.array([2]))
    with pytest.raises(ValueError, match="out of range"):
        metrics.target_ranks(np.zeros((1, 3)), np.array([3]))
    with pytest.raises(ValueError, match="returned"):
        metrics.ranks_in_chunks(lambda a, b: np.zeros((b - a, 4)), np.array([2]), None, 5)


def test_auc_hand_computed_with_tie():
    labels = [1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.3, 0.3, 0.1]
    # pairs (pos, neg): 0.9 beats all 3; 0.3 beats 0.1, ties 0.3, loses to 0.8 -> (3 + 1.5) / 6
    assert metrics.auc(labels, scores) == pytest.approx(4.5 / 6)


def test_gauc_weights_users_by_impressions_and_skips_one_class_users():
    labels = [1, 0, 0, 1, 0, 1, 1]
    scores = [0.9, 0.1, 0.5, 0.2, 0.6, 0.7, 0.4]
    users = ["a", "a", "a", "b", "b", "c", "c"]
    # a: 3 impressions, AUC 1; b: 2 impressions, AUC 0; c: only positives -> skipped
    assert metrics.gauc(labels, scores, users) == pytest.approx((3 * 1 + 2 * 0) / 5)
    assert math.isnan(metrics.gauc([1, 0], [0.1, 0.2], ["x", "y"]))  # no user has both classes


def test_logloss_hand_computed_and_rejects_logits():
    assert metrics.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    with pytest.raises(ValueError, match="probabilities"):
        metrics.logloss([1, 0], [2.0, -1.0])


def test_roc_curve_points():
    fpr, tpr, thresholds = metrics.roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.3])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.3]))


def test_plain_rank_arrays_are_refused_to_avoid_off_by_one():
    with pytest.raises(TypeError, match="0-based"):
        metrics.ranking_metrics(np.array([1, 2, 3]))


def test_absent_targets_count_zero_everywhere():
    ranks = metrics.Ranks.exact([-1, 0])
    m = metrics.ranking_metrics(ranks, ks=(5,))
    assert m == {"hit@5": 0.5, "ndcg@5": 0.5, "mrr": 0.5}


def test_user_bootstrap_resamples_whole_users_and_unit_weights_give_the_plain_metrics():
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0], np.float64)
    scores = np.array([0.9, 0.2, 0.2, 0.4, 0.5, 0.3, 0.3, 0.1])
    users = np.array(["a", "a", "a", "b", "b", "c", "c", "c"])
    ones = [np.ones((2, 8))]
    assert metrics.bootstrap_auc(labels, scores, iter(ones)) == pytest.approx([metrics.auc(labels, scores)] * 2)
    assert metrics.bootstrap_gauc(labels, scores, users, iter(ones)) == pytest.approx(
        [metrics.gauc(labels, scores, users)] * 2
    )
    weights = np.concatenate(list(metrics.user_bootstrap(users, resamples=50, seed=1, chunk=20)(users)))
    assert weights.shape == (50, 8)
    assert (weights[:, :3] == weights[:, :1]).all() and (weights[:, 5:] == weights[:, 5:6]).all()  # whole users
    assert (weights[:, [0, 3, 5]].sum(axis=1) == 3).all() and len(np.unique(weights[:, 0])) > 1
    # user b drawn twice, a once, c never: b's rows count double, c's not at all
    assert metrics.bootstrap_auc(labels, scores, iter([np.array([[1, 1, 1, 2, 2, 0, 0, 0]])])) == pytest.approx(
        [metrics.auc([1, 0, 0, 1, 1, 0, 0], [0.9, 0.2, 0.2, 0.4, 0.4, 0.5, 0.5])]
    )


def _ranks_by_masking(scores, targets, seen):
    """The reference: seen items and PAD/OOV set to NaN in a copy (the target kept), then higher and tied counted."""
    work = np.array(scores, np.float32)
    rows = np.arange(len(targets))
    target_scores = work[rows, targets].copy()
    for row, items in enumerate(seen):
        work[row, np.asarray(items, np.int64)] = np.nan
    work[:, :2] = np.nan
    work[rows, targets] = target_scores
    return (work > target_scores[:, None]).sum(axis=1), (work == target_scores[:, None]).sum(axis=1) - 1


def test_target_ranks_equal_masking_a_copy_with_ties_repeats_and_the_target_among_the_seen():
    """Counting over the whole row and taking the masked cells off gives the counts of masking them out: scores with
    many ties and -inf cells, seen lists that repeat an item, hold PAD/OOV or the target itself."""
    rng = np.random.default_rng(4)
    scores = rng.integers(-3, 4, size=(41, 30)).astype(np.float64)
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    targets = rng.integers(2, 30, size=41)
    seen = [np.concatenate([rng.integers(0, 30, size=rng.integers(0, 8)), [targets[u]] * (u % 2)]) for u in range(41)]
    ranks = metrics.target_ranks(scores, targets, seen)
    higher, ties = _ranks_by_masking(scores, targets, seen)
    np.testing.assert_array_equal(ranks.higher, higher)
    np.testing.assert_array_equal(ranks.ties, ties)
    assert ties.sum() > 41  # the case does hold ties
