"""The evaluation stage on a tiny features output with model doubles: funnel fidelity, gate both
ways with a registry, breakdowns, the report and the KFP classification artifact."""

import base64
import json

import numpy as np
import pytest
from evaluation_doubles import load_doubles, write_model

from components import metrics, registry, schema
from components.evaluation import breakdowns, data, gate, scoring, stage
from components.kfp_metrics import log_metrics
from components.serving import funnel

PLOTS = ("recall_at_k", "recall_vs_n", "breakdown_history", "breakdown_popularity", "coverage", "roc", "calibration")


def test_funnel_ranks_equal_the_serving_funnel_at_every_n(tiny_features, today_item_ids, tmp_path):
    """Where the target is new to the user, evaluation ranks it exactly where serving lists it; a repeated
    target is never masked as seen (the protocol of retrieval alone), so the funnel can hit it."""
    split = data.read_test_split(tiny_features)
    model = load_doubles(*write_model(tmp_path, "random", today_item_ids), "v")
    scores = scoring.score_model(
        model, split.hist_matrix, split.seen_items, split.targets, split.item_ids, split.popularity, candidates_n=50
    )
    repeated = np.array([t in set(s.tolist()) for t, s in zip(split.targets, split.seen_items)])
    assert sorted(scores.funnel_by_n) == [20, 30, 50] and 0 < repeated.sum() < len(split)
    for n, ranks in scores.funnel_by_n.items():
        served = funnel.run_funnel(
            model.retriever,
            model.ranker,
            split.hist_matrix,
            list(split.seen_items),
            candidates_n=n,
            top_k=n,
            popularity=split.popularity,
        )
        hit = served.items == split.targets[:, None]
        expected = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        np.testing.assert_array_equal(ranks.higher[~repeated], expected[~repeated])
        assert (expected[repeated] == -1).all()
    assert (scores.funnel.higher[repeated] >= 0).any()
    assert scores.funnel_lists.shape == (len(split), scoring.LIST_K)


def test_positions_in():
    cands = np.array([[5, 3, 9], [2, 4, 0]])
    items = np.array([[9, 5, 7], [0, 2, 4]])
    np.testing.assert_array_equal(scoring.positions_in(cands, items), [[2, 0, -1], [2, 0, 1]])


def test_gate_decisions_both_ways():
    baselines = {"popularity": {"ndcg@20": 0.01}, "item_to_item": {"ndcg@20": 0.05}}
    config = gate.GateConfig(metric="ndcg@20", margin_vs_baseline=0.1)
    beats = gate.decide({"ndcg@20": 0.056}, baselines, None, config)
    assert beats.blessed and "item_to_item" in beats.reasons[0]
    within_margin = gate.decide({"ndcg@20": 0.054}, baselines, None, config)
    assert not within_margin.blessed and within_margin.reasons[0].startswith("FAIL")
    worse_than_blessed = gate.decide({"ndcg@20": 0.06}, baselines, {"ndcg@20": 0.07}, config)
    assert not worse_than_blessed.blessed
    assert [c.passed for c in worse_than_blessed.comparisons] == [True, False]
    only_popularity = gate.decide({"ndcg@20": 0.02}, baselines, None, gate.GateConfig(baselines=("popularity",)))
    assert only_popularity.blessed
    with pytest.raises(ValueError, match="gate metric"):
        gate.decide({"hit@20": 0.1}, baselines, None, config)


def test_stage_blesses_good_model_then_rejects_worse_one_against_the_registry(tiny_features, today_item_ids, tmp_path):
    registry_dir = tmp_path / "registry"
    good = write_model(tmp_path / "good", "step", today_item_ids)
    first = stage.run_evaluation(
        tiny_features,
        *good,
        tmp_path / "out1" / "summary.json",
        tmp_path / "out1" / "report.html",
        registry_dir=registry_dir,
        config=stage.EvaluationConfig(candidates_n=30),
        load_models=load_doubles,
    )
    summary = json.loads((tmp_path / "out1" / "summary.json").read_text())
    assert first.blessed and summary["blessed"] and summary["previous_blessed"] is None
    rm = summary["ranking_metrics"]
    assert rm["funnel"]["ndcg@20"] > rm["item_to_item"]["ndcg@20"] > rm["popularity"]["ndcg@20"]
    assert summary["ranker"]["auc"] > 0.7
    assert registry.last_blessed(registry_dir) is None  # registered; export promotes it once its lists are out
    entry = registry.promote(registry_dir, summary["registered"]["version"])
    assert entry.version == summary["model_version"] and (entry.retrieval_dir / "model.json").exists()

    bad = write_model(tmp_path / "bad", "random", today_item_ids)
    second = stage.run_evaluation(
        tiny_features,
        *bad,
        tmp_path / "out2" / "summary.json",
        tmp_path / "out2" / "report.html",
        registry_dir=registry_dir,
        config=stage.EvaluationConfig(candidates_n=30),
        load_models=load_doubles,
    )
    assert not second.blessed
    assert second.summary["previous_blessed"]["version"] == entry.version
    assert second.summary["ranking_metrics"]["last_blessed_funnel"] == rm["funnel"]  # re-scored on the same split
    assert any(r.startswith("FAIL") and "last blessed" in r for r in second.summary["gate"]["reasons"])
    assert registry.last_blessed(registry_dir).version == entry.version  # not registered
    assert "NOT BLESSED" in (tmp_path / "out2" / "report.html").read_text()


def test_report_holds_every_plot_as_png(tiny_features, today_item_ids, tmp_path):
    good = write_model(tmp_path / "good", "step", today_item_ids)
    result = stage.run_evaluation(
        tiny_features,
        *good,
        tmp_path / "summary.json",
        tmp_path / "report.html",
        config=stage.EvaluationConfig(candidates_n=30),
        load_models=load_doubles,
    )
    page = (tmp_path / "report.html").read_text()
    for name in PLOTS:
        marker = f'<img alt="{name}" src="data:image/png;base64,'
        assert marker in page, name
        encoded = page.split(marker, 1)[1].split('"', 1)[0]
        assert base64.b64decode(encoded)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "BLESSED" in page and f"N = {result.export_n}" in page
    assert result.summary["export_n"] in (20, 30)


def test_history_and_popularity_breakdowns_hand_computed():
    labels = breakdowns.history_bucket_labels(np.array([1, 4, 5, 12, 60]))
    assert labels.tolist() == ["1-4", "1-4", "5-9", "10-19", "50+"]
    ranks = {"m": metrics.Ranks.exact([0, 30, -1, 5, 19])}
    table = breakdowns.breakdown(ranks, labels)
    assert list(table) == ["1-4", "5-9", "10-19", "50+"]
    assert table["1-4"]["users"] == 2 and table["1-4"]["m"]["hit@20"] == 0.5
    assert table["5-9"]["m"]["hit@20"] == 0.0 and table["50+"]["m"]["hit@20"] == 1.0
    assert table["10-19"]["m"]["ndcg@20"] == pytest.approx(1 / np.log2(7))
    # items 2..6 with counts 6, 3, 2, 1, 0: head = first third of 12 occurrences, torso = up to two thirds
    buckets = breakdowns.item_popularity_buckets(np.array([0, 0, 6, 3, 2, 1, 0]))
    assert buckets[2:].tolist() == ["head", "torso", "tail", "tail", "tail"]


def test_list_statistics():
    popularity = np.array([0, 0, 10, 5, 1, 0])
    bucket = np.array(["tail", "tail", "head", "torso", "tail", "tail"], dtype=object)
    lists = np.array([[2, 3, 0], [2, 4, 0]])
    stats = breakdowns.list_statistics(lists, popularity, bucket, k=3)
    assert stats == {"coverage@3": 3 / 4, "arp@3": pytest.approx((10 + 5 + 10 + 1) / 4), "tail_share@3": 0.25}


def test_choose_export_n_is_smallest_within_tolerance():
    by_n = {
        20: metrics.Ranks.exact([0] * 900 + [-1] * 100),
        50: metrics.Ranks.exact([0] * 955 + [-1] * 45),
        200: metrics.Ranks.exact([0] * 960 + [-1] * 40),
    }  # 0.955 >= 0.99 * 0.960 > 0.900
    assert stage.choose_export_n(by_n, "hit@20", 0.01)[0] == 50
    assert stage.choose_export_n(by_n, "hit@20", 0.0)[0] == 200


def test_registry_keeps_previous_model_when_a_copy_fails(tmp_path):
    good = tmp_path / "m"
    for part in ("r", "k"):
        (good / part).mkdir(parents=True)
        (good / part / "f").write_text(part)
    registry.register(tmp_path / "reg", "v1", good / "r", good / "k", {})
    registry.promote(tmp_path / "reg", "v1")
    with pytest.raises(FileNotFoundError):
        registry.register(tmp_path / "reg", "v2", good / "r", tmp_path / "missing", {})
    assert registry.last_blessed(tmp_path / "reg").version == "v1"
    assert sorted(p.name for p in (tmp_path / "reg" / "blessed").iterdir()) == ["LATEST.json", "v1"]
    with pytest.raises(registry.RegistryError, match="unique"):
        registry.register(tmp_path / "reg", "v1", good / "r", good / "k", {})


def test_classification_metrics_artifact():
    from kfp import dsl

    artifact = dsl.ClassificationMetrics(name="c", uri="/tmp/unused")
    labels = np.array([1, 0, 1, 0, 1.0])
    probs = np.array([0.9, 0.2, 0.4, 0.6, 0.8])
    log_metrics({}.__setitem__, stage.classification_figures(labels, probs), artifact)
    roc = artifact.metadata["confidenceMetrics"]
    assert all(np.isfinite(p["confidenceThreshold"]) for p in roc)
    matrix = artifact.metadata["confusionMatrix"]["rows"]
    assert [r["row"] for r in matrix] == [[1, 1], [1, 2]]


def test_top_lists_best_first_ties_by_lower_index_with_masks():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(40, 30)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[0, :] = -np.inf
    scores[1, :25] = -np.inf  # fewer finite items than k
    order = np.argsort(-scores, axis=1, kind="stable")[:, :8]  # the full sort, as the reference
    expected = np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, 0)
    np.testing.assert_array_equal(scoring.top_lists(scores, 8), expected)


def test_popularity_lists_shortcut_equals_the_full_ranking():
    from components import baselines

    rng = np.random.default_rng(5)
    train = baselines.TrainingSequences.from_examples(
        [np.array([i]) for i in rng.integers(2, 40, 300)], rng.integers(2, 40, 300), num_items=40
    )
    model = baselines.Popularity(train)
    hist = np.empty(25, object)
    hist[:] = [rng.integers(2, 40, rng.integers(1, 30)) for _ in range(25)]
    seen = np.empty(25, object)
    seen[:] = [np.unique(h) for h in hist]
    got = scoring.score_baseline(model, hist, seen, np.full(25, 2)).lists
    scores = np.tile(model.counts, (25, 1)).astype(np.float32)
    scores[:, :2] = -np.inf
    for row, items in enumerate(seen):
        scores[row, items] = -np.inf
    np.testing.assert_array_equal(got, scoring.top_lists(scores, scoring.LIST_K))
    assert (got[:, :5] >= 2).all()


def test_stage_entry_returns_kfp_figures_and_the_gate(tiny_features, today_item_ids, tmp_path):
    from kfp import dsl

    metrics_out = dsl.Metrics(name="metrics", uri=str(tmp_path / "m"))
    classification = dsl.ClassificationMetrics(name="classification", uri=str(tmp_path / "c"))
    good = write_model(tmp_path / "good", "step", today_item_ids)
    figures = stage.run(
        str(tiny_features),
        *map(str, good),
        str(tmp_path / "report.html"),
        str(tmp_path / "summary.json"),
        registry_dir="",
        candidates_n=30,
        gate_metric="hit@20",
        gate_baselines="popularity",
        margin_vs_baseline=0.0,
        margin_vs_blessed=0.0,
        model_version="v1",
        load_models=load_doubles,
    )
    log_metrics(metrics_out.log_metric, figures, classification)
    blessed = figures["blessed"] == 1.0
    assert blessed is True
    logged = metrics_out.metadata
    assert logged["funnel_hit_at_20"] > logged["popularity_hit_at_20"]
    assert {
        "retrieval_ndcg_at_10",
        "item_to_item_mrr",
        "ranker_auc",
        "export_n",
        "blessed",
        "funnel_coverage_at_20",
    } <= set(logged)
    assert classification.metadata["confidenceMetrics"] and classification.metadata["confusionMatrix"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gate"]["metric"] == "hit@20" and summary["model_version"] == "v1"


def test_sample_users_is_a_hash_of_the_id_and_nested():
    """The sample is the same whatever order the users come in, and a larger one holds a smaller one."""
    ids = np.asarray([f"user-{i}" for i in range(500)], dtype=object)
    small, large = data.sample_users(ids, 50), data.sample_users(ids, 200)
    assert len(small) == 50 and len(large) == 200 and np.all(np.diff(large) > 0)
    assert set(ids[small]) <= set(ids[large])
    order = np.random.default_rng(3).permutation(len(ids))
    assert set(ids[order][data.sample_users(ids[order], 50)]) == set(ids[small])
    assert list(data.sample_users(ids, 0)) == list(range(500)) == list(data.sample_users(ids, 900))


def test_max_users_scores_a_sample_and_its_ranking_rows(tiny_features, today_item_ids, tmp_path):
    whole = data.read_test_split(tiny_features)
    count = len(whole) // 3
    sampled = data.read_test_split(tiny_features, max_users=count)
    assert len(sampled) == count and sampled.users_total == whole.users_total == len(whole)
    assert set(sampled.user_ids) < set(whole.user_ids)
    index = {user: row for row, user in enumerate(whole.user_ids)}
    rows = [index[user] for user in sampled.user_ids]
    assert np.array_equal(sampled.targets, whole.targets[rows])
    assert np.array_equal(sampled.hist_matrix, whole.hist_matrix[rows])
    vocab = schema.read_vocab(tiny_features, schema.USER_VOCAB)
    sampled_index = {vocab.index(user) + schema.NUM_RESERVED for user in sampled.user_ids}
    assert set(sampled.ranking["user"].tolist()) <= sampled_index
    assert len(sampled.ranking["user"]) == np.isin(whole.ranking["user"], list(sampled_index)).sum() > 0

    result = stage.run_evaluation(
        tiny_features,
        *write_model(tmp_path / "good", "step", today_item_ids),
        tmp_path / "summary.json",
        tmp_path / "report.html",
        config=stage.EvaluationConfig(candidates_n=30, max_users=count),
        load_models=load_doubles,
    )
    assert result.summary["users"] == count and result.summary["users_in_split"] == len(whole)
    assert result.summary["run_metadata"]["parameters"]["evaluation"]["max_users"] == count
    assert f"{count} of {len(whole)} test users" in (tmp_path / "report.html").read_text()
    with pytest.raises(ValueError, match="max_users"):
        stage.EvaluationConfig(max_users=-1)
