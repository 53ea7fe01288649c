"""The ranker's context features from a hand-made history, the list loss by hand, and the funnel's order with them."""

import math

import numpy as np
import pytest
import tensorflow as tf

from components import baselines, schema
from components.ranking import context
from components.ranking.base import ModelConfig
from components.ranking.export import export_ranker, item_category_table, load_ranker
from components.ranking.training import TrainConfig, build_model, list_loss, training_set
from components.serving import funnel
from tests.serving.doubles import MeanRetriever

# Train steps (previous -> target) over items 2..9: (2->3) twice, (3->4), (4->5), (2->6).
PREVIOUS, TARGETS = [2, 2, 3, 4, 2], [3, 3, 4, 5, 6]
BRAND = np.array([0, 0, 1, 1, 2, 0, 0, 0, 0, 0])  # items 2 and 3 of brand 1, item 4 of brand 2, the rest unknown


def _features(hist, hist_cats, candidates, candidate_cats, leave_out=None):
    layer = context.CandidateContext(context.ItemStatistics.from_steps(PREVIOUS, TARGETS, BRAND))
    hist = tf.constant(hist, tf.int64)
    mask = tf.cast(hist != schema.PAD_INDEX, tf.float32)
    out = layer(
        hist,
        tf.constant(hist_cats, tf.int64),
        mask,
        tf.constant(candidates, tf.int64),
        tf.constant(candidate_cats, tf.int64),
        None if leave_out is None else tf.constant(leave_out, tf.float32),
    )
    return dict(zip(context.FEATURES, np.moveaxis(out.numpy()[0], -1, 0)))


# History: item 4 (category 5), then item 2 (category 6), most recent last. Candidates 3, 6, 5 in categories 6, 7, 5.
EXPECTED = {
    # 1 * P(c | 2) + 0.6 * P(c | 4): P(3 | 2) = 2/3, P(6 | 2) = 1/3, P(5 | 4) = 1
    "transition": [2 / 3, 1 / 3, 0.6],
    "has_transition": [1, 1, 1],
    # 0.6 * P(4 | c): only 3 -> 4 is counted
    "reverse_transition": [0.6, 0, 0],
    "log_popularity": [math.log1p(2) / 5, math.log1p(1) / 5, math.log1p(1) / 5],
    "category_share": [0.5, 0, 0.5],
    "same_category": [1, 0, 0],
    "brand_share": [0.5, 0, 0],  # item 3 shares brand 1 with item 2; unknown brands never match
}


@pytest.mark.parametrize("padded", ["right", "left"])
def test_context_features_of_a_hand_made_history(padded):
    hist, cats = ([[4, 2, 0, 0]], [[5, 6, 0, 0]]) if padded == "right" else ([[0, 0, 4, 2]], [[0, 0, 5, 6]])
    got = _features(hist, cats, [[3, 6, 5]], [[6, 7, 5]])
    assert set(got) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        np.testing.assert_allclose(got[name], expected, atol=1e-6, err_msg=name)


def test_leaving_out_a_train_rows_own_step_removes_it_from_the_counts():
    got = _features([[4, 2]], [[5, 6]], [[3, 6]], [[6, 7]], leave_out=[[1.0, 0.0]])
    # the row's own step is 2 -> 3: P(3 | 2) becomes (2 - 1) / (3 - 1); item 3's target count becomes 1
    np.testing.assert_allclose(got["transition"], [0.5, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(got["log_popularity"], [math.log1p(1) / 5, math.log1p(1) / 5], atol=1e-6)


def test_only_the_five_most_recent_steps_count_for_transitions():
    # 4 -> 5 is counted, but item 4 is the sixth most recent step here
    got = _features([[4, 7, 7, 7, 7, 7]], [[5, 5, 5, 5, 5, 5]], [[5]], [[5]])
    assert got["transition"][0] == 0 and got["has_transition"][0] == 0


def test_item_statistics_reject_indices_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        context.ItemStatistics.from_steps([2, 12], [3, 4], BRAND)


def test_list_loss_against_a_hand_computed_case():
    logits, labels = tf.constant([[2.0, 0.0, 1.0]]), tf.constant([1.0])

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    pointwise = (-math.log(sigmoid(2.0)) - math.log(1 - sigmoid(0.0)) - math.log(1 - sigmoid(1.0))) / 3
    listwise = -(2.0 - math.log(math.exp(2.0) + math.exp(0.0) + math.exp(1.0)))
    assert float(list_loss(logits, labels, 0.0)) == pytest.approx(pointwise, rel=1e-5)
    assert float(list_loss(logits, labels, 2.0)) == pytest.approx(pointwise + 2 * listwise, rel=1e-5)
    # a target labelled 0 (cvr: viewed, not bought) is still the list's positive for the listwise term
    zero = (-math.log(1 - sigmoid(2.0)) - math.log(1 - sigmoid(0.0)) - math.log(1 - sigmoid(1.0))) / 3
    assert float(list_loss(logits, tf.constant([0.0]), 1.0)) == pytest.approx(zero + listwise, rel=1e-5)


def test_the_funnel_orders_candidates_by_the_exported_rankers_context(drifting_features, tmp_path):
    """A DIN whose deep head is silenced and whose wide term reads only the transition feature re-ranks retrieval's
    candidates exactly as the item-to-item baseline scores them (ties keep retrieval's order)."""
    train = training_set(str(drifting_features), TrainConfig(), None)
    spec = schema.FeatureSpec.read(drifting_features)
    # context.py's features alone (the history match would add its own columns to the wide term)
    model = build_model(
        ModelConfig(model_type="din", history_match=False), spec.num_items, spec.num_categories, train.statistics
    )
    hist = np.array([[0, 0, 4, 9, 13], [2, 3, 6, 7, 10], [0, 0, 0, 0, 21]], np.int64)
    cats = item_category_table(drifting_features, spec.num_items)[hist]
    model.score_indices(hist, cats, hist, cats)  # builds the layers
    model.head.out.set_weights([np.zeros_like(w) for w in model.head.out.get_weights()])
    kernel = np.zeros((len(context.FEATURES), 1), np.float32)
    kernel[context.FEATURES.index("transition")] = 3.0
    model.wide.set_weights([kernel, np.zeros(1, np.float32)])
    export_ranker(model, drifting_features, tmp_path / "ranker", {})
    ranker = load_ranker(tmp_path / "ranker")

    retriever = MeanRetriever(np.random.default_rng(0).normal(size=(spec.num_items, 6)))
    result = funnel.run_funnel(retriever, ranker, hist, candidates_n=12, top_k=12)
    candidates, valid, _ = funnel.retrieve_candidates(
        retriever, hist, cats, None, funnel.allowed_items(spec.num_items), 12
    )
    values, offsets = train.data.sequences[schema.HIST_ITEMS]
    steps = baselines.TrainingSequences(
        values[offsets[1:] - 1], train.data.scalars[schema.TARGET_ITEM], np.zeros(0, np.int64), spec.num_items
    )
    item_to_item = baselines.ItemToItem(steps, context.WINDOW, context.DECAY)
    scores = item_to_item.score(list(hist)) - item_to_item.tiebreak
    for row in range(len(hist)):
        assert valid[row].all() and sorted(result.items[row]) == sorted(candidates[row])
        ordered = scores[row, result.items[row]]
        assert (np.diff(ordered) <= 1e-5).all(), ordered  # best transition first
        unscored = candidates[row][scores[row, candidates[row]] == 0]
        np.testing.assert_array_equal(result.items[row][ordered == 0], unscored)  # ties keep retrieval's order
    assert any((scores[row, candidates[row]] > 0).any() for row in range(len(hist)))  # the order is tested
