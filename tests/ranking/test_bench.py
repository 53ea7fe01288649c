"""The bench summary: medians over seeds, per-seed values and spreads, as DESIGN.md's bench contract asks."""
import pytest

from components.ranking.bench import METRICS, _summarize


def run(value: float) -> dict:
    return {name: value for name in METRICS}


def test_one_seed_keeps_its_values():
    assert _summarize([run(0.7)]) == run(0.7)


def test_several_seeds_report_median_per_seed_and_spread():
    summary = _summarize([run(0.70), run(0.74), run(0.71)])
    assert summary["auc"] == pytest.approx(0.71)
    assert summary["per_seed"]["auc"] == [0.70, 0.74, 0.71]
    assert summary["spread"]["auc"] == pytest.approx(0.04)
