"""The in-batch softmax with logQ correction and accidental-hit removal, against hand computation."""

import math

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.retrieval import losses
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import load_catalogue
from components.retrieval.model import TwoTowerModel, retrieval_task


def hand_loss(queries, candidates, ids, probability, temperature):
    """Mean over rows of -log softmax, logits q.c / T - log p(c), other rows' copies of the positive dropped."""
    total = 0.0
    for i in range(len(queries)):
        logits = []
        for j in range(len(candidates)):
            if j != i and ids[j] == ids[i]:
                continue  # an accidental hit: the positive item again, not a negative
            logit = sum(a * b for a, b in zip(queries[i], candidates[j])) / temperature - math.log(probability[j])
            logits.append((j, logit))
        positive = dict(logits)[i]
        total += -(positive - math.log(sum(math.exp(v) for _, v in logits)))
    return total / len(queries)


def test_task_on_a_hand_made_batch():
    queries = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]]
    candidates = [[1.0, 0.0], [0.0, 2.0], [1.0, 0.5], [1.0, 0.0]]
    ids = [5, 6, 7, 5]  # rows 0 and 3 share their positive item
    probability = [0.4, 0.1, 0.1, 0.4]
    task = retrieval_task(RetrievalConfig(temperature=0.5))
    per_row = task(
        tf.constant(queries),
        tf.constant(candidates),
        candidate_sampling_probability=tf.constant(probability),
        candidate_ids=tf.constant(ids),
        compute_metrics=False,
        compute_batch_metrics=False,
    )
    loss = tf.reduce_mean(per_row)  # as the model averages the task's rows
    assert float(loss) == pytest.approx(hand_loss(queries, candidates, ids, probability, 0.5), rel=1e-5)
    # without the correction and the removal the number differs: both terms are really applied
    uncorrected = hand_loss(queries, candidates, [0, 1, 2, 3], [1.0] * 4, 0.5)
    assert abs(float(loss) - uncorrected) > 0.05


@pytest.mark.parametrize("logq", [True, False])
def test_model_loss_uses_train_frequencies(shop_features, logq):
    catalogue = load_catalogue(shop_features)
    config = RetrievalConfig(encoder="mean", embedding_dim=8, temperature=0.2, logq_correction=logq)
    model = TwoTowerModel(catalogue, config)
    targets = np.array([2, 3, 2, 40])  # rows 0 and 2 share their positive: an accidental hit
    features = {
        schema.HIST_ITEMS: tf.constant([[0, 4, 5], [6, 7, 8], [0, 0, 9], [10, 11, 12]], tf.int64),
        schema.HIST_CATS: tf.constant([[0, 2, 3], [2, 3, 4], [0, 0, 5], [2, 2, 2]], tf.int64),
        schema.TARGET_ITEM: tf.constant(targets, tf.int64),
    }
    loss = float(model.compute_loss(features))
    queries = model.query_embedding(features[schema.HIST_ITEMS], features[schema.HIST_CATS]).numpy()
    candidates = model.candidate_embedding(tf.constant(targets, tf.int64)).numpy()
    counts = catalogue.train_count.astype(float)
    probability = counts[targets] / counts.sum() if logq else np.ones(len(targets))
    assert loss == pytest.approx(hand_loss(queries, candidates, targets, probability, 0.2), rel=1e-4)


def test_sampling_probability_is_the_train_target_share(shop_features):
    catalogue = load_catalogue(shop_features)
    probability = catalogue.sampling_probability()
    counts = catalogue.train_count
    known = counts > 0
    np.testing.assert_allclose(probability[known], counts[known] / counts.sum(), rtol=1e-6)
    # never-seen items (PAD and OOV at least) count as one occurrence, so log p stays finite
    np.testing.assert_allclose(probability[~known], 1 / counts.sum(), rtol=1e-6)


def _cross_entropy(logits: dict, positive) -> float:
    return -(logits[positive] - math.log(sum(math.exp(v) for v in logits.values())))


def test_full_softmax_on_a_hand_made_batch():
    """Rows PAD and OOV are no candidates; every real item is one."""
    items = [[9.0, 9.0], [9.0, -9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # indices 0 (PAD), 1 (OOV), 2, 3, 4
    queries = [[1.0, 0.0], [0.5, 2.0]]
    targets = [2, 4]
    loss = losses.full_softmax_loss(tf.constant(queries), tf.constant(items), tf.constant(targets), 0.5)
    expected = 0.0
    for query, target in zip(queries, targets):
        logits = {j: sum(a * b for a, b in zip(query, items[j])) / 0.5 for j in range(2, 5)}
        expected += _cross_entropy(logits, target)
    assert float(loss) == pytest.approx(expected / 2, rel=1e-6)


def _mixed_hand_loss(queries, candidates, ids, negatives, negative_ids, temperature, count=None, sequences=None):
    """Logits less log count[item] on both parts (count: item -> expected count, None = no correction);
    a candidate with the row's own item (but the positive) dropped, and with `sequences` any other row of the
    row's own sequence."""
    correction = (lambda item: math.log(count[item])) if count else (lambda item: 0.0)
    total = 0.0
    for i, query in enumerate(queries):
        logits = {}
        for j, (candidate, item) in enumerate(zip(candidates, ids)):
            if j != i and (item == ids[i] or (sequences is not None and sequences[j] == sequences[i])):
                continue
            logits[("batch", j)] = np.dot(query, candidate) / temperature - correction(item)
        for j, (negative, item) in enumerate(zip(negatives, negative_ids)):
            if item != ids[i]:
                logits[("uniform", j)] = np.dot(query, negative) / temperature - correction(item)
        total += _cross_entropy(logits, ("batch", i))
    return total / len(queries)


def test_mixed_negatives_exclude_the_positive_and_correct_by_the_mixture():
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    ids = [5, 6, 5]  # rows 0 and 2 share their positive
    # uniform negatives: item 6 is row 1's positive, item 5 that of rows 0 and 2; 9 is nobody's
    negative_ids = [6, 9, 5]
    negatives = np.array([[0.1, 0.9], [0.7, -0.7], [0.9, 0.2]])
    popularity = {5: 0.3, 6: 0.05, 9: 0.001}  # per-draw probability of an in-batch target
    num_items = 10 + schema.NUM_RESERVED  # 10 real items: a uniform draw picks one with probability 0.1
    count = {item: 3 * p + 3 * 0.1 for item, p in popularity.items()}  # 3 rows, 3 uniform draws
    expected_count = losses.mixture_expected_count(
        tf.constant([popularity[i] for i in ids + negative_ids]), 3, 3, num_items
    )
    np.testing.assert_allclose(expected_count.numpy(), [count[i] for i in ids + negative_ids], rtol=1e-6)

    def model_loss(correction):
        return float(
            losses.mixed_negatives_loss(
                tf.constant(queries, tf.float32),
                tf.constant(candidates, tf.float32),
                tf.constant(ids),
                tf.constant(negatives, tf.float32),
                tf.constant(negative_ids),
                0.5,
                correction,
            )
        )

    loss = model_loss(expected_count)
    assert loss == pytest.approx(
        _mixed_hand_loss(queries, candidates, ids, negatives, negative_ids, 0.5, count), rel=1e-5
    )
    assert model_loss(None) == pytest.approx(
        _mixed_hand_loss(queries, candidates, ids, negatives, negative_ids, 0.5), rel=1e-5
    )
    # keeping the positive among the negatives, or no correction, gives other numbers: both are really applied
    kept = _mixed_hand_loss(
        queries,
        candidates,
        ids,
        negatives,
        [100, 101, 102],
        0.5,
        {**count, 100: count[6], 101: count[9], 102: count[5]},
    )
    assert abs(loss - kept) > 0.05 and abs(loss - model_loss(None)) > 0.05


def test_uniform_negatives_are_real_items():
    drawn = losses.uniform_negatives(5000, 7).numpy()
    assert drawn.min() >= schema.NUM_RESERVED and drawn.max() == 6
    assert set(drawn.tolist()) == set(range(schema.NUM_RESERVED, 7))


def test_every_position_leaves_the_own_sequence_out_of_the_negatives():
    """Rows 0 and 1 are two steps of one user's sequence, row 2 another user's: row 0's negatives are row 2's
    positive and the uniform ones, not row 1's (that user's next purchase)."""
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    candidates = np.array([[1.0, 0.0], [0.3, 0.9], [0.8, 0.6]])
    ids, sequences = [5, 6, 7], [0, 0, 1]
    negatives, negative_ids = np.array([[0.1, 0.9], [0.7, -0.7]]), [8, 9]

    def model_loss(sequence_ids):
        return float(
            losses.mixed_negatives_loss(
                tf.constant(queries, tf.float32),
                tf.constant(candidates, tf.float32),
                tf.constant(ids),
                tf.constant(negatives, tf.float32),
                tf.constant(negative_ids),
                0.5,
                sequence_ids=sequence_ids,
            )
        )

    expected = _mixed_hand_loss(queries, candidates, ids, negatives, negative_ids, 0.5, sequences=sequences)
    assert model_loss(tf.constant(sequences)) == pytest.approx(expected, rel=1e-5)
    assert abs(model_loss(None) - expected) > 0.05  # without sequence ids row 1 is row 0's negative
    # no uniform negatives at all (the in-batch loss at every position) is a valid call
    alone = losses.mixed_negatives_loss(
        tf.constant(queries, tf.float32),
        tf.constant(candidates, tf.float32),
        tf.constant(ids),
        tf.zeros([0, 2]),
        tf.zeros([0], tf.int64),
        0.5,
        sequence_ids=tf.constant(sequences),
    )
    assert float(alone) == pytest.approx(_mixed_hand_loss(queries, candidates, ids, [], [], 0.5, sequences=sequences))
