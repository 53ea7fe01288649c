"""The in-batch softmax with logQ correction and accidental-hit removal, against hand computation."""
import math

import components  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from components import schema
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
    loss = task(tf.constant(queries), tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                candidate_ids=tf.constant(ids), compute_metrics=False, compute_batch_metrics=False)
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
