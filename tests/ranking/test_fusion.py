"""The funnel's retrieval weight is chosen on valid and travels with the ranking artifact."""

import json

import numpy as np
import pytest

from components import schema
from components.ranking import fusion
from components.ranking.export import load_ranker
from components.ranking.training import TrainConfig, train_ranker
from components.ranking.base import ModelConfig

from .synthetic import NUM_CATEGORIES, ITEMS_PER_CATEGORY


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


class CategoryRetriever:
    """Item embedding = one-hot category: retrieval proposes the items of the history's categories."""

    def __init__(self):
        num_items = NUM_CATEGORIES * ITEMS_PER_CATEGORY + schema.NUM_RESERVED
        self.item_embeddings = np.zeros((num_items, NUM_CATEGORIES), np.float32)
        items = np.arange(schema.NUM_RESERVED, num_items)
        self.item_embeddings[items, (items - schema.NUM_RESERVED) // ITEMS_PER_CATEGORY] = 1.0

    def encode(self, hist_items_idx, hist_cats_idx):
        recent = hist_items_idx[:, -1:]
        return self.item_embeddings[recent].sum(axis=1)


def test_train_ranker_with_a_retrieval_model_adds_hard_negatives_and_stores_the_weight(
    drifting_features, tmp_path, monkeypatch
):
    import components.retrieval.model_io as model_io

    monkeypatch.setattr(model_io, "load_retriever", lambda path: CategoryRetriever())
    config = TrainConfig(epochs=1, batch_size=64, hard_negatives=1, hard_negative_pool=3)
    result = train_ranker(
        str(drifting_features),
        str(tmp_path / "model"),
        ModelConfig(model_type="din"),
        config,
        retrieval_dir="retrieval-model",
    )
    info = json.loads((tmp_path / "model" / "ranker.json").read_text())
    assert info["hard_negatives_from"] == "retrieval-model"
    assert info["fusion"]["chosen_on"] == "valid"
    assert result["retrieval_weight"] == info["fusion"]["retrieval_weight"] >= 0
    assert load_ranker(tmp_path / "model").retrieval_weight == pytest.approx(result["retrieval_weight"])


def test_ranking_bench_with_a_retrieval_model_exports_a_fused_ranker(tmp_path, monkeypatch):
    import components.retrieval.model_io as model_io
    from components.ranking import bench

    from .synthetic import write_drifting_features

    features = write_drifting_features(tmp_path / "features", users=40, seed=2)
    monkeypatch.setattr(model_io, "load_retriever", lambda path: CategoryRetriever())
    monkeypatch.setattr(bench, "TrainConfig", lambda **kw: TrainConfig(**{**kw, "hard_negative_pool": 3}))
    speed = {
        "dien.speed_vs_reference": 1.0,
        "reference_gru.train_examples_per_s": 1.0,
        "dien.train_examples_per_s_same_batches": 1.0,
    }
    monkeypatch.setattr(bench, "speed_against_reference", lambda *args: speed)  # timed elsewhere; slow here
    result = bench.ranking_bench(
        str(features), model_dir=str(tmp_path / "model"), epochs=1, retrieval_dir="retrieval-model"
    )
    assert result["ranking"]["dien"]["retrieval_weight"] == load_ranker(tmp_path / "model").retrieval_weight


def test_target_moves_counts_up_down_and_same_among_found_targets():
    moves = fusion.target_moves(np.array([0, 3, 5, -1]), np.array([2, 3, 1, -1]))
    assert moves == {"up": 1, "down": 1, "same": 1}
