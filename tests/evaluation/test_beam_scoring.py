"""Evaluation's scoring on Beam (two local worker processes, real TFRS and DIEN artifacts loaded in each worker's
setup) gives the in-process evaluation's lists, ranks and figures exactly, with a last blessed model and a
comparison ranker in the run; and the shard plumbing keeps every user once, in order."""

import numpy as np
import pytest

from components import registry, schema
from components.evaluation import beam_scoring, stage

# Figures that measure time or name the run, not the models.
VOLATILE = ("evaluation_s", "run_metadata", "model_version")


def build_pair(features, root, seed: int, ranker_type: str = "dien"):
    """An untrained two-tower and ranker, exported and loaded as the stages do (random but real weights)."""
    import tensorflow as tf

    from components.ranking.base import ModelConfig
    from components.ranking.export import export_ranker
    from components.ranking.training import build_model
    from components.retrieval import export as retrieval_export
    from components.retrieval.config import RetrievalConfig
    from components.retrieval.data import load_catalogue
    from components.retrieval.model import TwoTowerModel

    tf.keras.utils.set_random_seed(seed)
    spec = schema.FeatureSpec.read(features)
    catalogue = load_catalogue(features)
    config = RetrievalConfig(embedding_dim=8, max_len=spec.max_len, num_heads=1, num_blocks=1)
    two_tower = TwoTowerModel(catalogue, config)
    two_tower.encode(np.array([[0, 2, 3]]), np.array([[0, 2, 3]]))
    retrieval_export.export(two_tower, catalogue, config, root / "retrieval", k=5)
    ranker = build_model(
        ModelConfig(model_type=ranker_type, embedding_dim=4, mlp_units=(8,)), spec.num_items, spec.num_categories
    )
    ranker.score_indices(np.array([[0, 2, 3]]), np.array([[0, 2, 3]]), np.array([[4, 5]]), np.array([[2, 3]]))
    export_ranker(ranker, features, root / "ranking", {"note": "untrained, for the Beam scoring test"})
    return root / "retrieval", root / "ranking"


@pytest.fixture(scope="module")
def real_run(tiny_features, tmp_path_factory):
    root = tmp_path_factory.mktemp("beam_models")
    candidate = build_pair(tiny_features, root / "candidate", seed=0)
    previous = build_pair(tiny_features, root / "previous", seed=1)
    din = build_pair(tiny_features, root / "din", seed=2, ranker_type="din")[1]
    registry_dir = root / "registry"
    registry.register(registry_dir, "v-previous", *previous, {})
    registry.promote(registry_dir, "v-previous")
    return candidate, din, registry_dir


def evaluate(tiny_features, real_run, **config):
    (retrieval, ranking), din, registry_dir = real_run
    return stage.evaluate(
        tiny_features,
        retrieval,
        ranking,
        registry_dir,
        stage.EvaluationConfig(candidates_n=30, model_version="v-candidate", **config),
        comparison_rankers={"din": din},
    )


def test_beam_and_in_process_evaluations_are_equal(tiny_features, real_run):
    in_process = evaluate(tiny_features, real_run)
    on_beam = evaluate(tiny_features, real_run, user_scoring="beam")  # two worker processes (the local default)
    a = {k: v for k, v in in_process.summary.items() if k not in VOLATILE}
    b = {k: v for k, v in on_beam.summary.items() if k not in VOLATILE}
    assert a == b
    assert in_process.blessed == on_beam.blessed and in_process.export_n == on_beam.export_n
    # the run held every kind of scored model, and the figures are not degenerate
    metrics = a["ranking_metrics"]
    assert {"funnel", "retrieval", "funnel_din", "last_blessed_funnel", "popularity", "item_to_item"} <= set(metrics)
    assert metrics["funnel"]["ndcg@20"] != metrics["last_blessed_funnel"]["ndcg@20"]
    assert 0 < metrics["retrieval"]["hit@20"] < 1


def test_beam_scoring_returns_every_shard_in_order(tiny_features, real_run):
    """score_split's lists equal the in-process ones row for row, with shards of a few users each."""
    from components import baselines
    from components.evaluation import data, scoring
    from components.serving import models

    (retrieval, ranking), _, _ = real_run
    split = data.read_test_split(tiny_features)
    model = models.load_serving_model(retrieval, ranking, "v")
    expected = scoring.score_model(
        model,
        split.hist_matrix,
        split.seen_items,
        split.targets,
        split.item_ids,
        split.popularity,
        30,
        behaviour=split.behaviour,
    )
    popularity = baselines.Popularity(split.train)
    scores, found = beam_scoring.score_split(
        split,
        {"m": (str(retrieval), str(ranking), "v")},
        {"popularity": popularity},
        30,
        256.0,
        models.load_serving_model,
        ["--runner=FnApiRunner"],  # in this process: the shards, not the workers, are under test
        users_per_shard=7,
    )
    assert len(beam_scoring.shard_bounds(len(split), 7)) == -(-len(split) // 7) > beam_scoring.MIN_SHARDS
    got = scores["m"]
    np.testing.assert_array_equal(got.funnel_lists, expected.funnel_lists)
    np.testing.assert_array_equal(got.retrieval_lists, expected.retrieval_lists)
    np.testing.assert_array_equal(got.retrieval.higher, expected.retrieval.higher)
    assert sorted(got.funnel_by_n) == sorted(expected.funnel_by_n)
    for n in expected.funnel_by_n:
        np.testing.assert_array_equal(got.funnel_by_n[n].higher, expected.funnel_by_n[n].higher)
    baseline = scoring.score_baseline(popularity, split.hist_items, split.seen_items, split.targets)
    np.testing.assert_array_equal(found["popularity"].lists, baseline.lists)
    np.testing.assert_array_equal(found["popularity"].ranks.higher, baseline.ranks.higher)


def test_shard_bounds_cover_every_user_once():
    for users in (0, 1, 3, 4, 9, 10_001, 95_000):
        bounds = beam_scoring.shard_bounds(users, 10_000)
        covered = [i for a, b in bounds for i in range(a, b)]
        assert covered == list(range(users))
    assert len(beam_scoring.shard_bounds(95_000, 10_000)) == 10
    assert len(beam_scoring.shard_bounds(100, 10_000)) == beam_scoring.MIN_SHARDS


def test_ragged_rows_round_trip_through_npz(tmp_path):
    rows = [np.array([3, 4]), np.zeros(0, np.int64), np.array([7])]
    path = str(tmp_path / "x.npz")
    beam_scoring.write_npz(path, beam_scoring.pack_ragged("seen", rows))
    back = beam_scoring.unpack_ragged(beam_scoring.read_npz(path), "seen")
    assert [r.tolist() for r in back] == [[3, 4], [], [7]]


def test_a_model_folder_is_copied_from_any_beam_filesystem(tmp_path):
    source = tmp_path / "model"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"graph")
    (source / "variables" / "v.index").write_bytes(b"index")
    target = tmp_path / "copy"
    target.mkdir()
    beam_scoring.copy_folder(str(source), str(target))
    assert (target / "saved_model.pb").read_bytes() == b"graph"
    assert (target / "variables" / "v.index").read_bytes() == b"index"
    assert beam_scoring.local_folder(str(source)) == str(source)
    with pytest.raises(FileNotFoundError, match="no files to copy"):
        beam_scoring.copy_folder(str(tmp_path / "absent"), str(target))


def test_unknown_scoring_mode_is_refused():
    with pytest.raises(ValueError, match="user_scoring 'dataflow'"):
        stage.EvaluationConfig(user_scoring="dataflow")
