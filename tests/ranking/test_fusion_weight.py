"""Ranking training chooses the funnel's retrieval weight on valid, and it travels with the ranking artifact."""

import json
from pathlib import Path

import numpy as np
import pytest

from components import schema
from components.ranking.export import load_ranker
from components.ranking.training import TrainConfig

from .synthetic import ITEMS_PER_CATEGORY, NUM_CATEGORIES


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


def test_the_ranking_stage_with_a_retrieval_model_adds_hard_negatives_and_stores_the_weight(
    drifting_features, tmp_path, monkeypatch
):
    import components.retrieval.model_io as model_io
    from components.ranking import stage

    scored_valid = []
    monkeypatch.setattr(model_io, "load_retriever", lambda path: CategoryRetriever())
    monkeypatch.setattr(model_io, "load_valid_retriever", lambda path: scored_valid.append(path) or CategoryRetriever())
    monkeypatch.setattr(
        stage, "TrainConfig", lambda **kw: TrainConfig(**kw, batch_size=64, hard_negatives=1, hard_negative_pool=3)
    )
    result = stage.run(str(drifting_features), str(tmp_path / "model"), "din", 1, 0, retrieval_model="retrieval-model")
    info = json.loads((tmp_path / "model" / "ranker.json").read_text())
    assert info["hard_negatives_from"] == "retrieval-model"
    assert info["fusion"]["chosen_on"] == "valid"
    assert scored_valid == ["retrieval-model"]  # the weight is chosen with the model that never trained on valid
    assert result["retrieval_weight"] == info["fusion"]["retrieval_weight"] >= 0
    assert load_ranker(tmp_path / "model").retrieval_weight == pytest.approx(result["retrieval_weight"])


def test_ranking_bench_trains_and_fuses_each_seed_against_its_own_retrieval_model(tmp_path, monkeypatch):
    import components.retrieval.model_io as model_io
    from components.ranking import bench

    from .synthetic import write_drifting_features

    features = write_drifting_features(tmp_path / "features", users=40, seed=2)
    loaded = []
    monkeypatch.setattr(model_io, "load_retriever", lambda path: loaded.append(path) or CategoryRetriever())
    monkeypatch.setattr(model_io, "load_valid_retriever", lambda path: loaded.append(path) or CategoryRetriever())
    monkeypatch.setattr(bench, "TrainConfig", lambda **kw: TrainConfig(**{**kw, "hard_negative_pool": 3}))
    speed = {
        "dien.speed_vs_reference": 1.0,
        "reference_gru.train_examples_per_s": 1.0,
        "dien.train_examples_per_s_same_batches": 1.0,
    }
    monkeypatch.setattr(bench, "speed_against_reference", lambda *args: speed)  # timed elsewhere; slow here
    model_dirs = {seed: str(tmp_path / f"ranking-seed{seed}") for seed in (0, 1)}
    retrieval_dirs = {0: "retrieval-seed0", 1: "retrieval-seed1"}
    result = bench.ranking_bench(
        str(features), seeds=(0, 1), model_dirs=model_dirs, epochs=1, retrieval_dirs=retrieval_dirs
    )
    assert "retrieval-seed0" in loaded and "retrieval-seed1" in loaded
    weights = result["ranking"]["dien"]["per_seed"]["retrieval_weight"]
    for seed, model_dir in model_dirs.items():
        info = json.loads((Path(model_dir) / "ranker.json").read_text())
        assert info["hard_negatives_from"] == retrieval_dirs[seed]
        assert info["train_config"]["seed"] == seed
        assert weights[seed] == load_ranker(model_dir).retrieval_weight


def test_ranking_bench_refuses_a_seed_without_its_retrieval_model(tmp_path):
    from components.ranking import bench

    from .synthetic import write_drifting_features

    features = write_drifting_features(tmp_path / "features", users=20, seed=2)
    with pytest.raises(ValueError, match=r"seed\(s\) \[1\]"):
        bench.ranking_bench(str(features), seeds=(0, 1), retrieval_dirs={0: "retrieval-seed0"})
