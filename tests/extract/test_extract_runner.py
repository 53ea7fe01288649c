"""The extract stage on DuckDB warehouses: results equal an independent pandas computation; bad input fails cleanly."""

import datetime as dt
import json

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components import schema
from components.extract import runner
from components.extract import stage as extract_stage
from components.warehouse import duckdb_warehouse, engines

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    path = tmp_path_factory.mktemp("wh") / "shop.duckdb"
    duckdb_warehouse.build_warehouse("synthetic:tiny", path, seed=2)
    con = duckdb_warehouse.connect(path)
    frames = {t: con.execute(f"SELECT * FROM {t}").df() for t in ("events", "items", "impressions")}
    con.close()
    return path, frames


def raw_warehouse(path, events: pd.DataFrame, items: pd.DataFrame, impressions: pd.DataFrame | None = None):
    """A DuckDB file without contract constraints, for bad-input cases."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    for name, frame in (("events", events), ("items", items), ("impressions", impressions)):
        if frame is not None:
            con.register("frame", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
    con.close()
    return f"duckdb://{path}"


def ts(day, hour=0):
    return pd.Timestamp(2024, 1, day, hour, tz="UTC")


def test_events_equal_an_independent_pandas_computation(shop, tmp_path):
    path, frames = shop
    events = frames["events"]
    start = events.event_ts.quantile(0.2)
    end = events.event_ts.quantile(0.8)
    manifest = extract_stage.run(
        f"duckdb://{path}", tmp_path / "out", start.isoformat(), end.isoformat(), "view,purchase", 4
    )
    got = pq.read_table(tmp_path / "out" / "events.parquet").to_pandas()

    inside = events[(events.event_ts >= start) & (events.event_ts < end) & events.event_type.isin(["view", "purchase"])]
    sizes = inside.groupby("user_id").size()
    expected = inside[inside.user_id.isin(sizes[sizes >= 4].index)]
    expected = expected.sort_values(["user_id", "event_ts", "event_seq"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected[got.columns.tolist()], check_dtype=False)

    assert manifest["rows"] == {
        "events": len(expected),
        "users": expected.user_id.nunique(),
        "items": len(frames["items"]),
        "impressions": manifest["rows"]["impressions"],
    }
    dropped = manifest["dropped"]["events"]
    assert dropped["outside_window"] == int(((events.event_ts < start) | (events.event_ts >= end)).sum())
    assert dropped["user_below_min_events"] == int(sizes[sizes < 4].sum())
    assert sum(dropped.values()) + len(expected) == len(events)
    imps = frames["impressions"]
    assert manifest["rows"]["impressions"] == int(((imps.event_ts >= start) & (imps.event_ts < end)).sum())


def test_output_layout_and_manifest(shop, tmp_path):
    path, frames = shop
    out = tmp_path / "extracted"
    out.mkdir()  # KFP may create the artifact directory beforehand
    manifest = extract_stage.run(f"duckdb://{path}", out)
    assert sorted(p.name for p in out.iterdir()) == [
        "events.parquet",
        "impressions.parquet",
        "items.parquet",
        "manifest.json",
    ]
    assert json.loads((out / "manifest.json").read_text()) == manifest == runner.read_manifest(out)
    assert manifest["window_start"] == manifest["window_end"] == ""
    assert manifest["event_types"] == list(schema.EVENT_TYPES)
    assert manifest["rows"]["events"] == len(frames["events"])
    assert set(manifest["query_sha256"]) == {"events", "items", "impressions"}
    assert manifest["dropped"] == {"events": {}, "items": {}, "impressions": {}}
    for name, contract in (("events", schema.EVENTS), ("items", schema.ITEMS), ("impressions", schema.IMPRESSIONS)):
        assert pq.read_schema(out / f"{name}.parquet").equals(contract, check_metadata=False)
    assert [p.name for p in tmp_path.iterdir()] == ["extracted"]


def test_bad_rows_are_counted_and_dropped(tmp_path):
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", None, "b", "b", "c"],
            "item_id": ["x", "y", "x", "x", "ghost", "x", "y"],
            "event_type": ["view", "purchase", "teleport", "view", "view", "view", "view"],
            "event_ts": [ts(1), ts(2), ts(3), ts(3), ts(4), ts(5), ts(9)],
            "event_seq": [0, 1, 2, 3, 4, 5, 6],
            "session_id": [None] * 7,
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["x", "y", "y", None],
            "category": ["c1", "c2", "c2", "c3"],
            "brand": [None] * 4,
            "price": [1.0, 2.0, 2.0, 3.0],
            "title": [None] * 4,
            "available": [True, False, False, True],
        }
    )
    uri = raw_warehouse(tmp_path / "bad.duckdb", events, items)
    manifest = extract_stage.run(uri, tmp_path / "out", "", "2024-01-08", "", 1)
    assert manifest["dropped"]["events"] == {
        "null_id": 1,
        "outside_window": 1,
        "unknown_event_type": 1,
        "unknown_item": 1,
    }
    assert manifest["dropped"]["items"] == {"duplicate_item_id": 1, "null_item_id": 1}
    got = pq.read_table(tmp_path / "out" / "events.parquet").to_pandas()
    assert got[["user_id", "item_id"]].values.tolist() == [["a", "x"], ["a", "y"], ["b", "x"]]
    assert "impressions" not in manifest["rows"]


def test_missing_table_and_column(tmp_path):
    events = pd.DataFrame(
        {
            "user_id": ["a"],
            "item_id": ["x"],
            "event_type": ["view"],
            "event_ts": [ts(1)],
            "event_seq": [0],
            "session_id": [None],
        }
    )
    items = pd.DataFrame(
        {"item_id": ["x"], "category": ["c"], "brand": [None], "price": [1.0], "title": [None], "available": [True]}
    )
    no_items = raw_warehouse(tmp_path / "a.duckdb", events, None)
    with pytest.raises(runner.ExtractError, match="no table items"):
        extract_stage.run(no_items, tmp_path / "out")
    no_seq = raw_warehouse(tmp_path / "b.duckdb", events.drop(columns=["event_seq"]), items)
    with pytest.raises(runner.ExtractError, match=r"lacks column\(s\) \['event_seq'\]"):
        extract_stage.run(no_seq, tmp_path / "out")
    with pytest.raises(engines.WarehouseError, match="no DuckDB warehouse"):
        extract_stage.run(f"duckdb://{tmp_path}/absent.duckdb", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_window_fails_without_output(shop, tmp_path):
    path, _ = shop
    with pytest.raises(runner.ExtractError, match="no events to extract.*outside_window"):
        extract_stage.run(f"duckdb://{path}", tmp_path / "out", "2000-01-01", "2000-02-01")
    with pytest.raises(runner.ExtractError, match="empty window"):
        extract_stage.run(f"duckdb://{path}", tmp_path / "out", "2025-02-01", "2025-01-01")
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_no_output(shop, tmp_path, monkeypatch):
    path, _ = shop

    def broken(*args, **kwargs):
        raise OSError("disk full")

    real = runner.write_parquet
    calls = []

    def fail_on_items(backend, run, table, out):
        calls.append(table)
        if table == "items":
            broken()
        return real(backend, run, table, out)

    monkeypatch.setattr(runner, "write_parquet", fail_on_items)
    with pytest.raises(OSError, match="disk full"):
        extract_stage.run(f"duckdb://{path}", tmp_path / "out")
    assert calls == ["events", "items"] and list(tmp_path.iterdir()) == []


def test_existing_nonempty_output_is_refused(shop, tmp_path):
    path, _ = shop
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    with pytest.raises(runner.ExtractError, match="not an empty directory"):
        extract_stage.run(f"duckdb://{path}", tmp_path / "out")


def test_bad_propensities_are_dropped(tmp_path):
    events = pd.DataFrame(
        {
            "user_id": ["a"],
            "item_id": ["x"],
            "event_type": ["view"],
            "event_ts": [ts(1)],
            "event_seq": [0],
            "session_id": ["s"],
        }
    )
    items = pd.DataFrame(
        {"item_id": ["x"], "category": ["c"], "brand": ["b"], "price": [1.0], "title": [None], "available": [True]}
    )
    impressions = pd.DataFrame(
        {
            "request_id": ["r"] * 4,
            "user_id": ["a"] * 4,
            "item_id": ["x", "x", "x", "nope"],
            "position": [0, 1, 2, 3],
            "propensity": [0.5, 0.0, 1.5, 0.2],
            "policy": ["p"] * 4,
            "event_ts": [ts(1)] * 4,
            "clicked": [True, False, False, False],
            "purchased": [False] * 4,
        }
    )
    uri = raw_warehouse(tmp_path / "imp.duckdb", events, items, impressions)
    manifest = extract_stage.run(uri, tmp_path / "out")
    assert manifest["dropped"]["impressions"] == {"invalid_propensity": 2, "unknown_item": 1}
    assert manifest["rows"]["impressions"] == 1


def test_unsupported_uris(tmp_path):
    with pytest.raises(engines.WarehouseError, match="unsupported warehouse URI"):
        extract_stage.run("postgres://x", tmp_path / "out")
    with pytest.raises(engines.WarehouseError, match="bigquery://project.dataset"):
        extract_stage.run("bigquery://justaproject", tmp_path / "out")


def test_component_signature():
    from components.extract.component import extract

    spec = extract.component_spec
    assert set(spec.inputs) == {
        "warehouse_uri",
        "window_start",
        "window_end",
        "event_types",
        "min_events_per_user",
        "run_time",
        "window_days",
        "job_create_time",
    }
    assert spec.inputs["min_events_per_user"].default == 1 and spec.inputs["window_start"].default == ""
    assert set(spec.outputs) == {"extracted"}


def test_small_batches_give_the_same_output(shop, tmp_path, monkeypatch):
    path, frames = shop
    whole = extract_stage.run(f"duckdb://{path}", tmp_path / "whole", run_time="2030-01-01")
    monkeypatch.setattr(engines, "BATCH_ROWS", 7)
    batched = extract_stage.run(f"duckdb://{path}", tmp_path / "batched", run_time="2030-01-01")
    assert batched == whole and whole["rows"]["users"] == frames["events"].user_id.nunique()
    assert pq.read_table(tmp_path / "batched" / "events.parquet").equals(
        pq.read_table(tmp_path / "whole" / "events.parquet")
    )
