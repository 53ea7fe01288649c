"""Popularity and item-to-item baselines against hand-computed cases."""

import numpy as np
import pytest

from components import baselines, metrics


def _train():
    # sequences (item indices, 2..6): [2,3,4], [2,3,5], [3,4], [6,2]
    # train examples = (history, target) for every step t >= 1
    hist = [np.array([2]), np.array([2, 3]), np.array([2]), np.array([2, 3]), np.array([3]), np.array([6])]
    targets = np.array([3, 4, 3, 5, 4, 2])
    return baselines.TrainingSequences.from_examples(hist, targets, num_items=7)


def test_popularity_counts_every_occurrence():
    model = baselines.Popularity(_train())
    # occurrences: 2 x3, 3 x3, 4 x2, 5 x1, 6 x1
    np.testing.assert_array_equal(model.score([np.array([2])])[0], [0, 0, 3, 3, 2, 1, 1])


def test_item_to_item_hand_computed():
    model = baselines.ItemToItem(_train(), window=2, decay=0.5)
    # transitions: 2->3 x2 ; 3->4 x2, 3->5 x1 ; 6->2 x1
    # P(.|3) = {4: 2/3, 5: 1/3};  P(.|2) = {3: 1}
    # history [6, 2, 3]: window 2 -> 3 (weight 1), 2 (weight 0.5); 6 is outside the window
    scores = model.score([np.array([6, 2, 3])])[0]
    expected = np.array([0, 0, 0, 0.5, 2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # popularity only breaks ties: 2 (3 occurrences) before 6 (1), both without transitions
    assert scores[2] > scores[6] > 0


def test_item_to_item_ignores_padding_and_unknown_and_handles_empty_history():
    model = baselines.ItemToItem(_train(), window=3, decay=0.5)
    padded = model.score([np.array([0, 1, 3])])[0]
    np.testing.assert_allclose(padded, model.score([np.array([3])])[0])
    empty = model.score([np.array([], np.int64)])[0]
    assert np.argmax(empty) in (2, 3)  # the most popular items


def test_baseline_evaluation_end_to_end():
    model = baselines.ItemToItem(_train(), window=1)
    hist = np.empty(2, object)
    hist[:] = [np.array([2, 3]), np.array([6])]
    ranks = baselines.evaluate(model, hist, np.array([4, 2]), [np.array([2, 3]), np.array([6])])
    # user 0 after 3: 4 is the most likely next item; user 1 after 6: 2
    assert ranks.higher.tolist() == [0, 0]
    assert metrics.ranking_metrics(ranks, ks=(5,))["hit@5"] == 1.0


def test_bad_training_input():
    with pytest.raises(ValueError, match="vocabulary"):
        baselines.TrainingSequences.from_examples([np.array([2])], np.array([9]), num_items=7)
    with pytest.raises(ValueError, match="non-empty"):
        baselines.TrainingSequences.from_examples([np.array([], np.int64)], np.array([3]), num_items=7)
