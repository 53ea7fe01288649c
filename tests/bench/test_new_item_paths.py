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


def test_rows_with_history_leave_out_empty_histories_and_keep_the_given_rows_order():
    import types

    import numpy as np

    from bench.new_items import rows_with_history
    from components import schema

    pad = schema.PAD_INDEX
    test = types.SimpleNamespace(
        hist_items=np.array([[pad, 5], [pad, pad], [3, 4], [pad, 7]]), target_item=np.array([6, 7, 8, 9])
    )
    np.testing.assert_array_equal(rows_with_history(test), [0, 2, 3])
    np.testing.assert_array_equal(rows_with_history(test, np.array([3, 1, 0])), [3, 0])
