"""The export through the real model artifacts: a TFRS two-tower and a DIEN, untrained but exported and
loaded through their stage APIs, on the tiny features output of conftest.py."""

import duckdb
import numpy as np
import pytest

from components import schema
from components.export import export
from components.export.inputs import read_serving_inputs
from components.serving import funnel
from components.serving.models import load_serving_model

from .conftest import GENERATED_AT, UNAVAILABLE


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    import tensorflow as tf

    from components.ranking.base import ModelConfig
    from components.ranking.export import export_ranker
    from components.ranking.training import build_model
    from components.retrieval import export as retrieval_export
    from components.retrieval.config import RetrievalConfig
    from components.retrieval.data import load_catalogue
    from components.retrieval.model import TwoTowerModel

    from .conftest import write_features

    features = write_features(tmp_path_factory.mktemp("features"))
    root = tmp_path_factory.mktemp("models")
    tf.keras.utils.set_random_seed(0)
    catalogue = load_catalogue(features)
    config = RetrievalConfig(embedding_dim=8, max_len=3, num_heads=1, num_blocks=1)
    two_tower = TwoTowerModel(catalogue, config)
    two_tower.encode(np.array([[0, 2, 3]]), np.array([[0, 2, 3]]))  # builds the variables
    retrieval_export.export(two_tower, catalogue, config, root / "retrieval", k=5)
    spec = schema.FeatureSpec.read(features)
    dien = build_model(
        ModelConfig(model_type="dien", embedding_dim=4, mlp_units=(8,)), spec.num_items, spec.num_categories
    )
    dien.score_indices(np.array([[0, 2, 3]]), np.array([[0, 2, 3]]), np.array([[4, 5]]), np.array([[2, 3]]))
    export_ranker(dien, features, root / "ranking", {"note": "untrained, for the export test"})
    return features, root / "retrieval", root / "ranking"


def test_real_artifacts_load_into_a_serving_model(real_models):
    features, retrieval_dir, ranking_dir = real_models
    model = load_serving_model(retrieval_dir, ranking_dir, "v-real")
    inputs = read_serving_inputs(features)
    assert list(model.item_ids[2:]) == list(inputs.item_ids[2:])
    assert model.retriever.item_embeddings.shape[0] == model.num_items == len(model.ranker.item_category)


def test_left_padding_does_not_change_the_real_models(real_models):
    """The funnel cuts batches to their longest history; that is only sound if padding is inert."""
    features, retrieval_dir, ranking_dir = real_models
    model = load_serving_model(retrieval_dir, ranking_dir, "v-real")
    hist = np.array([[0, 0, 4, 5], [0, 3, 6, 7]], dtype=np.int64)
    cats = model.ranker.item_category[hist]
    cands = np.array([[8, 9, 10], [11, 12, 13]], dtype=np.int64)
    cand_cats = model.ranker.item_category[cands]
    wide = np.concatenate([np.zeros((2, 3), np.int64), hist], axis=1)
    np.testing.assert_allclose(
        model.retriever.encode(hist[:, 1:], cats[:, 1:]),
        model.retriever.encode(wide, np.where(wide > 0, model.ranker.item_category[wide], 0)),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        model.ranker.score(hist[:, 1:], cats[:, 1:], cands, cand_cats),
        model.ranker.score(wide, model.ranker.item_category[wide], cands, cand_cats),
        rtol=1e-5,
        atol=1e-6,
    )


def test_export_with_real_models_writes_funnel_lists(real_models, tmp_path):
    features, retrieval_dir, ranking_dir = real_models
    params = export.ExportParams(
        top_k=3,
        candidates_n=6,
        experiment="exp",
        treatment_ratio=1.0,
        model_version="v-real",
        run_id="run-real",
        generated_at=GENERATED_AT,
        similar_k=2,
    )
    manifest = export.run_export(
        features, retrieval_dir, ranking_dir, f"duckdb://{tmp_path / 'r.duckdb'}", tmp_path / "out", params
    )
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT user_id, rank, item_id, score, source FROM recommendations ORDER BY user_id, rank"
        ).fetchall()
    assert manifest["users"] == 6 and len(rows) == 18
    assert not {r[2] for r in rows} & UNAVAILABLE
    funnel_rows = [r for r in rows if r[4] == funnel.SOURCE_FUNNEL]
    assert len(funnel_rows) == 12 and all(0.0 <= r[3] <= 1.0 for r in funnel_rows)  # DIEN's P(buy)
    for user in {r[0] for r in funnel_rows}:
        scores = [r[3] for r in funnel_rows if r[0] == user]
        assert scores == sorted(scores, reverse=True)
