"""Failure modes of the extract stage (issue 15): each test is named after its case."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema
from components.experiments import ope, stage
from components.extract import stage as extract_stage

from .test_extract_runner import raw_warehouse, ts

ITEMS = pd.DataFrame(
    {
        "item_id": ["x", "y"],
        "category": ["c1", "c2"],
        "brand": [None] * 2,
        "price": [1.0, 2.0],
        "title": [None] * 2,
        "available": [True, True],
    }
)


def _events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "event_ts", "event_seq", "session_id"])


def test_case04_duplicate_rows_and_future_events_are_counted_and_dropped(tmp_path):
    events = _events(
        [
            ("a", "x", "view", ts(1), 0, "s1"),
            ("a", "x", "view", ts(1), 0, "s1"),  # exact duplicate
            ("a", "x", "view", ts(1), 0, "s1"),  # and another
            ("a", "y", "view", ts(1), 0, None),  # same time and seq, another item: kept
            ("a", "y", "view", ts(1), 0, None),  # exact duplicate with a null session
            ("a", "y", "purchase", ts(2), 1, None),
            ("a", "x", "view", pd.Timestamp(2099, 1, 1, tz="UTC"), 2, None),  # would have been the test target
            ("b", "x", "view", ts(3), 0, None),
            ("b", "x", "view", ts(3), 1, None),  # same event again, but logged as another step: kept
            ("b", "y", "view", ts(20, 13), 2, None),  # after the run time
        ]
    )
    uri = raw_warehouse(tmp_path / "wh.duckdb", events, ITEMS)
    manifest = extract_stage.run(uri, tmp_path / "out", run_time="2024-01-20T12:00:00")
    assert manifest["dropped"]["events"] == {"duplicate_row": 3, "future_event": 2}
    assert manifest["run_time"] == "2024-01-20T12:00:00+00:00"
    got = pq.read_table(tmp_path / "out" / "events.parquet").to_pandas()
    assert sorted(got[["user_id", "item_id", "event_type", "event_seq"]].values.tolist()) == [
        ["a", "x", "view", 0],
        ["a", "y", "purchase", 1],
        ["a", "y", "view", 0],
        ["b", "x", "view", 0],
        ["b", "x", "view", 1],
    ]
    assert manifest["rows"]["events"] == len(got) == len(events) - sum(manifest["dropped"]["events"].values())

    # the window's end does not make a future event "outside_window": it is counted as what it is
    again = extract_stage.run(uri, tmp_path / "again", "", "2024-01-10", run_time="2024-01-20T12:00:00")
    assert again["dropped"]["events"] == {"duplicate_row": 3, "future_event": 2}


def _impressions(propensities):
    n = len(propensities)
    return pd.DataFrame(
        {
            "request_id": [f"r{k // 2}" for k in range(n)],
            "user_id": ["a"] * n,
            "item_id": ["x", "y"] * (n // 2),
            "position": [k % 2 for k in range(n)],
            "propensity": propensities,
            "policy": ["p"] * n,
            "event_ts": [ts(1)] * n,
            "clicked": [k % 3 == 0 for k in range(n)],
            "purchased": [False] * n,
        }
    )


def test_case05_propensities_below_the_floor_are_dropped_and_the_click_rate_uses_the_kept_rows(tmp_path):
    propensities = [0.5, 1e-300, 0.25, schema.MIN_PROPENSITY, 0.0, 0.9, 1e-7, 0.3]
    impressions = _impressions(propensities)
    events = _events([("a", "x", "view", ts(1), 0, None)])
    uri = raw_warehouse(tmp_path / "wh.duckdb", events, ITEMS, impressions)
    manifest = extract_stage.run(uri, tmp_path / "out")
    assert manifest["dropped"]["impressions"] == {"invalid_propensity": 1, "propensity_below_floor": 2}
    kept = pq.read_table(tmp_path / "out" / "impressions.parquet").to_pandas()
    assert sorted(kept.propensity) == sorted(p for p in propensities if p >= schema.MIN_PROPENSITY)

    logged = stage.logged_click_rate(uri)
    used = impressions[impressions.propensity >= schema.MIN_PROPENSITY]
    assert logged == {
        "impressions": len(used),
        "clicks": int(used.clicked.sum()),
        "click_rate": used.clicked.sum() / len(used),
    }
    assert len(used) == manifest["rows"]["impressions"] == 5

    table = pa.Table.from_pandas(_impressions([0.5, 1e-300]), preserve_index=False)
    with pytest.raises(
        ope.LogError, match=r"1 impression\(s\) have a propensity below the floor 1e-06 .*first row 1: 1e-300"
    ):
        ope.from_impressions(table, {"x": 0, "y": 1})
