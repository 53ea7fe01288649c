"""The ranking bench: medians over seeds with per-seed values and spreads (docs/architecture.md, the bench contract), the
interleaving of the speed comparison, and the paired intervals."""

import dataclasses

import numpy as np
import pytest

from components import metrics
from components.ranking import bench


def run(value: float) -> dict:
    return {"auc": value, "gauc": value / 2, "valid_auc_by_epoch": [value]}


def test_one_seed_keeps_its_values():
    assert metrics.merge_seeds([run(0.7)]) == run(0.7)


def test_several_seeds_report_median_per_seed_and_spread():
    # ranking_bench merges its seeds with the harness's merge_seeds: a list has no median, the first seed's is kept
    summary = metrics.merge_seeds([run(0.70), run(0.74), run(0.71)])
    assert summary["auc"] == pytest.approx(0.71) and summary["gauc"] == pytest.approx(0.355)
    assert summary["per_seed"]["auc"] == [0.70, 0.74, 0.71]
    assert summary["spread"]["auc"] == pytest.approx(0.04)
    assert summary["valid_auc_by_epoch"] == [0.70] and "valid_auc_by_epoch" not in summary["per_seed"]


@dataclasses.dataclass
class Rows:
    lists: dict = dataclasses.field(default_factory=dict)


def test_speed_runs_alternate_round_by_round_after_an_untimed_round():
    calls = []
    seconds = bench.interleaved_seconds(
        {"dien": lambda: calls.append("dien"), "reference_gru": lambda: calls.append("reference_gru")}, rounds=3
    )
    assert calls == ["dien", "reference_gru"] * 4
    assert [len(values) for values in seconds.values()] == [3, 3]


def test_speed_ratio_is_the_median_of_same_round_ratios(monkeypatch):
    """A load burst in round 2 slows both models alike: the per-round ratio stays, the median ignores outliers."""
    timings = {"dien": iter([9.0, 1.0, 3.0, 1.0]), "reference_gru": iter([9.0, 2.0, 6.0, 1.0])}
    monkeypatch.setattr(
        bench,
        "interleaved_seconds",
        lambda runs, rounds: {name: [next(timings[name]) for _ in range(rounds)] for name in runs},
    )
    monkeypatch.setattr(bench, "make_train_step", lambda model, rate: None)
    monkeypatch.setattr(bench, "build_model", lambda *args: None)
    monkeypatch.setattr(bench, "planned_dataset", lambda data, plans: [])
    monkeypatch.setattr(bench, "epoch_plan", lambda data, size, seed, epoch: [np.arange(4)] * 10)
    result = bench.speed_against_reference(Rows(), 10, 3, bench.TrainConfig(), rounds=4, batches=2)
    assert result["dien.speed_vs_reference_per_round"] == [1.0, 2.0, 2.0, 1.0]
    assert result["dien.speed_vs_reference"] == 1.5
    assert result["reference_gru.train_examples_per_s"] == pytest.approx(8 / 4.0)  # 2 batches of 4, median 4 s


def test_intervals_cover_the_point_value_and_pair_the_difference():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60).astype(str), 10)
    labels = (rng.random(600) < 0.3).astype(np.float32)
    good = labels + rng.normal(0, 0.8, 600)
    runs = {
        "dien": {"auc": bench.metrics.auc(labels, good), "gauc": bench.metrics.gauc(labels, good, users)},
        "din": {"auc": bench.metrics.auc(labels, good[::-1]), "gauc": bench.metrics.gauc(labels, good[::-1], users)},
    }
    order = np.arange(600)[::-1]  # din's rows in another order: pairing goes by user, not by row
    bench.add_intervals(
        runs,
        {"dien": labels, "din": labels[order]},
        {"dien": good, "din": good[::-1][order]},
        {"dien": users, "din": users[order]},
    )
    dien = runs["dien"]
    assert dien["auc_ci95_low"] < dien["auc"] < dien["auc_ci95_high"]
    assert dien["gauc_ci95_low"] < dien["gauc"] < dien["gauc_ci95_high"]
    assert dien["auc_minus_din"] > 0.2 and 0 < dien["auc_minus_din_ci95_low"] < dien["auc_minus_din"]
    assert runs["din"]["auc_ci95_high"] < dien["auc_ci95_low"]


def test_the_bench_reads_test_scores_from_the_pass_that_gave_the_metrics(drifting_features):
    """fit_and_measure(with_scores=True) hands back the test probabilities of evaluate's own pass (no third pass over
    test): they are the model's predictions in row order and give the reported AUC."""
    from components import schema
    from components.ranking.base import ModelConfig
    from components.ranking.data import load_split
    from components.ranking.training import TrainingSet, fit_and_measure, predict

    spec = schema.FeatureSpec.read(drifting_features)
    train_data, test_data = load_split(drifting_features, "train"), load_split(drifting_features, "test")
    train_set = TrainingSet(train_data, None)
    fitted = fit_and_measure(
        ModelConfig(model_type="din"),
        bench.TrainConfig(epochs=1, batch_size=64),
        spec,
        train_set,
        None,
        test_data,
        with_scores=True,
    )
    result = fitted.metrics
    scores = result.pop("test_scores")
    np.testing.assert_allclose(scores, predict(fitted.model, test_data, timed=False)[0], atol=1e-6)
    assert metrics.auc(test_data.scalars[schema.LABEL], scores) == pytest.approx(result["auc"])
    np.testing.assert_array_equal(result.pop("test_labels"), test_data.scalars[schema.LABEL])
    np.testing.assert_array_equal(result.pop("test_users"), test_data.scalars[schema.USER])
    assert (
        "test_scores"
        not in fit_and_measure(
            ModelConfig(model_type="din"), bench.TrainConfig(epochs=1, batch_size=64), spec, train_set, None, test_data
        ).metrics
    )
