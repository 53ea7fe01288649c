"""The trees probe: its hand features on a hand-made history, its rows equal to the ranking examples', and a
signal it must find."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from features.shop_data import events_table, items_table, write_extract

from components import schema
from components.features.pipeline import run_features
from components.ranking import probe

IN_PROCESS = ["--runner=FnApiRunner"]
DAY = 1440  # minutes
NAN = float("nan")


def _column(name: str) -> int:
    return probe.FEATURES.index(name)


@pytest.fixture(scope="module")
def taobao_like(tmp_path_factory):
    """One user whose purchase is a step of its own, as on Taobao (items i000 and i003 share category c0).

    Steps: 0 i000 view (day 0) | 1 i001 view | 2 i000 fav | 3 i002 view (day 1) | 4 i003 view (day 2)
    | 5 i000 view + cart | 6 i001 view | 7 i000 purchase. The default time split cuts at day 1: train = day 0,
    valid = day 1, test = day 2; a second user has steps only on day 0 and day 2.
    """
    rows = [
        ("u1", "i000", "view", 0, 0),
        ("u1", "i001", "view", 10, 1),
        ("u1", "i000", "fav", 20, 2),
        ("u1", "i002", "view", DAY, 3),
        ("u1", "i003", "view", 2 * DAY, 4),
        ("u1", "i000", "view", 2 * DAY + 5, 5),
        ("u1", "i000", "cart", 2 * DAY + 6, 6),
        ("u1", "i001", "view", 2 * DAY + 10, 7),
        ("u1", "i000", "purchase", 2 * DAY + 20, 8),
        ("u2", "i002", "view", 0, 0),
        ("u2", "i001", "view", 1, 1),
        ("u2", "i002", "view", 2 * DAY, 2),
    ]
    root = tmp_path_factory.mktemp("taobao_like")
    extract = write_extract(root / "extract", events_table(rows), items_table([f"i{k:03d}" for k in range(4)]))
    stats = run_features(
        str(extract), str(root / "features"), max_len=10, ranking_task="cvr", beam_args=IN_PROCESS, split="time"
    )
    return extract, root / "features", stats


def test_time_split_cut_defaults_to_the_last_two_days(taobao_like):
    _, _, stats = taobao_like
    window = stats["split_window"]
    assert (window["cut"], window["window_days"]) == ("2024-01-02T00:00:00+00:00", 1.0)
    assert window["valid"] == ["2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00"]
    assert window["test"] == ["2024-01-03T00:00:00+00:00", "2024-01-04T00:00:00+00:00"]
    assert stats["examples"]["ranking"] == {"train": 2, "valid": 1, "test": 4}


def test_probe_features_of_a_hand_made_history(taobao_like):
    extract, features, _ = taobao_like
    rows = probe.build_rows(extract, features)
    test = rows["test"]
    u1 = test.users == "u1"
    assert test.labels[u1].tolist() == [0.0, 1.0, 0.0]  # i003; i000 (bought at step 7); i001
    history = test.history[u1]
    i000 = history[1]  # step 5; before it: i000 view at minute 0, i000 fav at 20, i003 (same category) view
    expected = {
        "item_views": 1,
        "item_carts": 0,
        "item_favs": 1,
        "item_purchases": 0,
        "item_s_since_view": (2 * DAY + 5) * 60,
        "item_s_since_fav": (2 * DAY + 5 - 20) * 60,
        "cat_views": 2,
        "cat_favs": 1,
        "cat_s_since_view": 5 * 60,
        "history_length": 5,
    }
    for name, value in expected.items():
        assert i000[_column(name)] == value, name
    assert np.isnan(i000[_column("item_s_since_cart")]) and np.isnan(i000[_column("cat_s_since_purchase")])
    i001 = history[2]  # step 6: the cart of step 5 is now history, of another item and category
    assert i001[_column("item_views")] == 1 and i001[_column("item_s_since_view")] == (2 * DAY) * 60
    assert i001[_column("cat_carts")] == 0 and i001[_column("history_length")] == 6


def test_train_rates_leave_a_rows_own_label_out(taobao_like):
    extract, features, _ = taobao_like
    rows = probe.build_rows(extract, features)
    train, test = rows["train"], rows["test"]
    # train rows: u1's i001 view (label 0) and u2's i001 view (label 0): i001 seen twice in train
    assert sorted(train.items.tolist()) == [train.items[0]] * 2
    popularity = probe.feature_matrix(train, train, is_train=True)[:, _column("item_popularity")]
    assert popularity.tolist() == [1.0, 1.0]  # each row counts only the other
    on_test = probe.feature_matrix(test, train, is_train=False)
    assert sorted(on_test[:, _column("item_popularity")].tolist()) == [0.0, 0.0, 0.0, 2.0]


def test_probe_rows_must_be_the_ranking_examples(taobao_like, tmp_path):
    extract, features, _ = taobao_like
    other = tmp_path / "extract"
    events = pa.concat_tables(
        [pq.read_table(extract / "events.parquet"), events_table([("u1", "i003", "view", 2 * DAY + 30, 9)])]
    )
    write_extract(other, events, pq.read_table(extract / "items.parquet"))
    with pytest.raises(schema.SchemaError, match="test rows from the extract"):
        probe.build_rows(other, features)


def test_probe_finds_that_carted_items_get_bought(tmp_path):
    """Users buy what they carted in an earlier step and nothing else: the trees must rank those views first."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(120):
        minute, seq = 0, 0
        for day in (0, 1, 2):
            for _ in range(6):
                item = f"i{rng.integers(0, 30):03d}"
                carted = rng.random() < 0.3
                for event_type in (["cart"] if carted else []) + ["view", "view"] + (["purchase"] if carted else []):
                    other = f"i{rng.integers(30, 60):03d}"
                    rows += [
                        (f"u{u}", item, event_type, day * DAY + minute, seq),
                        (f"u{u}", other, "view", day * DAY + minute + 1, seq + 1),
                    ]
                    minute, seq = minute + 2, seq + 2
    extract = write_extract(tmp_path / "extract", events_table(rows), items_table([f"i{k:03d}" for k in range(60)]))
    run_features(str(extract), str(tmp_path / "features"), ranking_task="cvr", beam_args=IN_PROCESS, split="time")
    result = probe.run_probe(probe.build_rows(extract, tmp_path / "features"), seed=0)
    assert result["auc"] > 0.9
    assert len(result["test_scores"]) == len(probe.build_rows(extract, tmp_path / "features")["test"].labels)
    # the ranking bench's path: rows built once in a fresh process, one run per seed, the test rows' labels and users
    from components.isolation import in_fresh_process

    runs = in_fresh_process(probe.run_seeds, extract, tmp_path / "features", (0, 1))
    test = probe.build_rows(extract, tmp_path / "features")["test"]
    assert sorted(runs) == [0, 1] and runs[0]["auc"] == pytest.approx(result["auc"])
    np.testing.assert_array_equal(runs[0]["test_scores"], result["test_scores"])
    np.testing.assert_array_equal(runs[1]["test_labels"], test.labels)
    np.testing.assert_array_equal(runs[1]["test_users"], test.users)
