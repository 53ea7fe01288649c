"""Score fusion: logit(ranker) + w * retrieval score, applied wherever the funnel re-ranks."""

import numpy as np
import pytest

from components.serving import funnel, fusion
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


def _candidates(rng, users=300, n=20):
    """Retrieval order = column order; the target sits at a random column."""
    candidates = np.stack([rng.permutation(np.arange(2, 2 + n)) for _ in range(users)])
    target_column = rng.integers(0, n, users)
    targets = candidates[np.arange(users), target_column]
    scores = np.tile(np.linspace(1.0, 0.0, n, dtype=np.float32), (users, 1))
    return candidates, targets, target_column, scores


def test_target_ranks_counts_better_scores_and_ties_before_the_target():
    fused = np.array([[0.1, 0.5, 0.5, 0.9], [1.0, 0.0, 0.0, 0.0]])
    assert fusion.target_ranks(fused, np.array([2, -1])).tolist() == [2, -1]


def test_a_ranker_that_knows_the_target_gets_weight_zero():
    rng = np.random.default_rng(0)
    candidates, targets, target_column, scores = _candidates(rng)
    probabilities = np.full(candidates.shape, 0.1, np.float32)
    probabilities[np.arange(len(targets)), target_column] = 0.9
    probabilities += rng.uniform(0, 0.01, candidates.shape).astype(np.float32)
    chosen = fusion.choose_weight(candidates, probabilities, scores, targets, candidates_n=(10, 20))
    assert chosen["retrieval_weight"] == 0.0
    assert chosen["valid_by_weight"][0]["n20"]["hit@10"] == 1.0


def test_a_noise_ranker_over_a_good_retriever_gets_a_large_weight():
    rng = np.random.default_rng(1)
    candidates, targets, _, scores = _candidates(rng)
    candidates[:, [0, 1]] = candidates[:, [1, 0]]
    targets = candidates[:, 0]  # retrieval ranks the target first for everyone
    probabilities = rng.uniform(0.05, 0.95, candidates.shape).astype(np.float32)
    chosen = fusion.choose_weight(candidates, probabilities, scores, targets, candidates_n=(10, 20))
    assert chosen["retrieval_weight"] > 0
    best = max(chosen["valid_by_weight"], key=lambda row: row["mean_ndcg"])
    assert best["n20"]["ndcg@10"] == pytest.approx(chosen["valid_retrieval_alone"]["ndcg@10"]) == 1.0


def test_target_moves_counts_up_down_and_same_among_found_targets():
    moves = fusion.target_moves(np.array([0, 3, 5, -1]), np.array([2, 3, 1, -1]))
    assert moves == {"up": 1, "down": 1, "same": 1}
