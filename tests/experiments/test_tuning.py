import pytest

from components.experiments import studies, tuning


def test_grid_points_and_the_report_seeds_are_refused():
    points = tuning.points({"a": (1, 2), "b": (True, False)})
    assert points == [{"a": 1, "b": True}, {"a": 1, "b": False}, {"a": 2, "b": True}, {"a": 2, "b": False}]
    assert not set(tuning.TUNING_SEEDS) & set(studies.BANDIT_SEEDS)
    with pytest.raises(SystemExit, match="report seeds"):
        tuning.main(["--out", "unused.jsonl", "--seeds", "100", str(studies.BANDIT_SEEDS[0])])
