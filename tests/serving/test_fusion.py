"""Score fusion: logit(ranker) + w * retrieval score, applied wherever the funnel re-ranks."""

import numpy as np
import pytest

from components.serving import funnel
from serving.doubles import BiasRanker, MeanRetriever


class ProbabilityRanker(BiasRanker):
    """A fixed per-item probability, plus the retrieval weight a loaded ranker carries."""

    def __init__(self, item_probability, item_category, retrieval_weight):
        super().__init__(item_probability, item_category)
        self.retrieval_weight = retrieval_weight


# Retrieval prefers 2 > 3 > 4 > 5 (query = item 6's direction); the ranker prefers 5 > 4 > 3 > 2.
EMBEDDINGS = np.array([[0, 0], [0, 0], [1.0, 0], [0.8, 0], [0.6, 0], [0.4, 0], [1, 0]], dtype=np.float32)
PROBABILITY = np.array([0.5, 0.5, 0.2, 0.3, 0.4, 0.5, 0.5])
CATEGORIES = np.array([0, 1, 2, 2, 2, 2, 2])


def _lists(weight):
    ranker = ProbabilityRanker(PROBABILITY, CATEGORIES, weight)
    return funnel.run_funnel(MeanRetriever(EMBEDDINGS), ranker, np.array([[0, 6]]), candidates_n=4, top_k=4).items


def test_fuse_adds_the_weighted_retrieval_score_to_the_ranker_logit():
    fused = funnel.fuse(np.array([0.5, 0.8]), np.array([2.0, -1.0]), 0.5)
    assert fused == pytest.approx([1.0, np.log(4.0) - 0.5], rel=1e-5)


def test_weight_zero_is_the_ranker_alone_and_a_large_weight_is_retrieval_order():
    assert _lists(0.0).tolist() == [[5, 4, 3, 2]]
    assert _lists(100.0).tolist() == [[2, 3, 4, 5]]


def test_a_middle_weight_mixes_both_orders():
    # logits -1.39, -0.85, -0.41, 0 plus 2.5 x retrieval 1.0, 0.8, 0.6, 0.4: 1.11, 1.15, 1.10, 1.0
    assert _lists(2.5).tolist() == [[3, 2, 4, 5]]


def test_a_fusing_ranker_without_candidate_scores_is_refused():
    ranker = ProbabilityRanker(PROBABILITY, CATEGORIES, 1.0)
    candidates = np.array([[2, 3]])
    with pytest.raises(ValueError, match="pass candidate_scores"):
        funnel.rerank(ranker, np.array([[6]]), np.array([[2]]), candidates, np.ones_like(candidates, bool), k=2)
