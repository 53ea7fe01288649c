"""bench.new_items.by_path: the new-item HIT@20 split by how the model scores the target."""

from bench.new_items import by_path


def test_by_path_splits_the_targets_by_id_row_and_features_alone():
    rows = [(1, 0, True), (0, 1, True), (1, 1, True), (0, 1, False), (0, 0, False)]
    out = by_path(rows)
    assert out["by_id"] == {"targets": 3, "hit@20": round(2 / 3, 6), "category_popularity": round(2 / 3, 6)}
    assert out["features_only"] == {"targets": 2, "hit@20": 0.0, "category_popularity": 0.5}


def test_by_path_of_a_path_without_targets_has_no_rates():
    out = by_path([(1, 0, True)])
    assert out["features_only"] == {"targets": 0, "hit@20": None, "category_popularity": None}
