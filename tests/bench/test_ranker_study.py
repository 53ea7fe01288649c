"""bench/ranker_study.py: its variants are valid train configurations and its funnel figures are the fusion's rule."""

import dataclasses
import math

import numpy as np
import pytest

from bench import ranker_study
from components.ranking.training import TrainConfig


@pytest.mark.parametrize("name", sorted(ranker_study.VARIANTS))
def test_every_variant_is_a_train_config(name):
    config = dataclasses.replace(TrainConfig(), **ranker_study.VARIANTS[name])
    assert config.near_negatives <= config.near_pool


def test_funnel_figures_by_hand():
    """Two users, 20 candidates in retrieval's order; the ranker lifts user 0's target from rank 5 to the top and
    leaves user 1's at rank 0 below another: the ranker alone and the funnel, NDCG@20 by hand."""
    n = 200
    candidates = np.tile(np.arange(10, 10 + n), (2, 1))
    scores = np.tile(np.linspace(1.0, 0.0, n, dtype=np.float32), (2, 1))
    probabilities = np.full((2, n), 0.1, np.float32)
    targets = np.array([15, 10])  # user 0: retrieval rank 5; user 1: rank 0
    probabilities[0, 5] = 0.99  # the ranker puts user 0's target first
    probabilities[1, 3] = 0.99  # and user 1's rank-3 item above its target
    got = ranker_study.funnel_figures(candidates, probabilities, scores, targets)
    ndcg = {rank: 1 / math.log2(rank + 2) for rank in range(4)}
    assert got["retrieval"]["ndcg@20"] == pytest.approx((1 / math.log2(7) + 1) / 2)
    # the ranker alone at N=20: user 0's target first, user 1's second
    assert got["n20"]["ranker"]["ndcg@20"] == pytest.approx((ndcg[0] + ndcg[1]) / 2)
    assert got["n20"]["ranker"]["moves"] == {"up": 1, "down": 1, "same": 0}
    assert got["n20"]["ranker"]["hit@20"] == 1.0
    # the chosen weight is the valid rule's: the best mean NDCG@10 over N, and the funnel at N=200 uses it
    assert 0 <= got["relative_weight"] <= 1e6
    assert got["n200"]["funnel"]["ndcg@20"] >= got["retrieval"]["ndcg@20"] - 1e-9
