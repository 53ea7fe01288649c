"""The new-item baseline: popularity within the category of the user's last item, new items at their category's
mean count."""

import numpy as np

from components.baselines import category_popularity_top_k


def test_new_item_ranks_by_its_category_mean_after_seen_and_unavailable_items_are_removed():
    # indices 2..7; categories: 2,3,4 -> A (10), 5,6,7 -> B (11); item 4 and 7 are new (count 0)
    category = np.array([0, 1, 10, 10, 10, 11, 11, 11])
    counts = np.array([0, 0, 9, 1, 0, 50, 40, 0])
    available = np.array([False, False, True, True, True, True, False, True])
    lists = category_popularity_top_k(np.array([2, 5]), [np.array([2]), np.array([5])], category, counts, available, 3)
    # user in A, item 2 seen: item 4 (new, mean 5) beats item 3 (1), then B's most popular available item 5
    assert lists[0].tolist() == [4, 3, 5]
    # user in B, item 5 seen, 6 unavailable: item 7 (new, mean of 5 and 6 = 45) first, then A by estimate
    assert lists[1].tolist() == [7, 2, 4]


def test_the_new_item_summary_scores_model_and_baseline_on_new_items_and_on_every_target(tmp_path):
    """Item 4 is new (no train target); the funnel's ranks: rows 0 and 2 hit in its top 2, row 1 misses, row 3 has no
    history (the baseline reads the last item: it is left out of both figures)."""
    import types

    import pandas as pd

    from components import metrics, schema
    from components.evaluation.report import lineage_section
    from components.evaluation.stage import new_item_summary

    pd.DataFrame(
        {
            "item_index": [2, 3, 4, 5, 6],
            "category_index": [10, 10, 10, 11, 11],
            "available": [True] * 5,
            "train_count": [9, 1, 0, 50, 40],
        }
    ).to_parquet(tmp_path / schema.ITEM_FEATURES)
    split = types.SimpleNamespace(
        num_items=7,
        hist_items=np.array([np.array([2]), np.array([5]), np.array([6]), np.array([], np.int64)], dtype=object),
        seen_items=np.array([np.array([2]), np.array([5]), np.array([6]), np.array([], np.int64)], dtype=object),
        targets=np.array([4, 4, 3, 4]),
    )
    funnel = metrics.Ranks(higher=np.array([0, -1, 1, 0]), ties=np.zeros(4, np.int64))
    summary = new_item_summary(tmp_path, split, funnel, k=2)
    # baseline top 2: user in A (2 seen) -> [4 (new: mean 5), 3]; in B (5 seen) -> [6, 2]; in B (6 seen) -> [5, 2]
    assert summary["targets"] == 2  # rows 0 and 1; row 3's new target has no history
    assert summary["hit@2"] == 0.5 and summary["baseline_hit@2"] == 0.5
    assert summary["all_targets"] == {"targets": 3, "hit@2": 2 / 3, "baseline_hit@2": 1 / 3}

    new_items = {**summary, "hit@20": summary["hit@2"], "baseline_hit@20": summary["baseline_hit@2"]}
    new_items["all_targets"] = {"targets": 3, "hit@20": 2 / 3, "baseline_hit@20": 1 / 3}
    lineage = {"data_window": {}, "parent_model": None, "compared_with": None, "data_drift": {}}
    html = lineage_section({"lineage": lineage, "new_items": new_items})
    assert "2 test targets; HIT@20 0.5000 for the model against 0.5000" in html
    assert "on all 3 test targets with a history, 0.6667 against 0.3333" in html

    split.targets = np.array([2, 5, 3, 4])  # no new item among the targets with a history
    assert new_item_summary(tmp_path, split, funnel, k=2) is None
