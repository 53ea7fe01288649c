"""SOURCE=events:<path>[,items:<path>][,event_map=...]: a shop's own files into the warehouse, bad files refused."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema
from components.extract import stage as extract_stage
from components.warehouse import duckdb_warehouse, sources, timestamps
from components.warehouse.events_file import load_events_file
from components.warehouse.loaders import LoaderError


def write_csv(path, text):
    path.write_text(text.strip() + "\n")
    return path


def test_csv_with_timestamp_alias_iso_and_file_order_ties(tmp_path):
    events = write_csv(
        tmp_path / "events.csv",
        """
user_id,item_id,event_type,timestamp
u1,sku-2,view,2024-03-01T10:00:00Z
u1,sku-1,view,2024-03-01 10:00:00
u2,sku-1,purchase,2024-03-01T12:30:00+02:00
""",
    )
    got, items = load_events_file(events)
    assert got.schema == schema.EVENTS
    assert got.column("event_ts").to_pylist() == [pd.Timestamp("2024-03-01T10:00:00Z")] * 2 + [
        pd.Timestamp("2024-03-01T10:30:00Z")
    ]
    assert got.column("event_seq").to_pylist() == [0, 1, 2]  # the file order breaks the tie of u1's two views
    assert got.column("session_id").null_count == 3
    # no item columns: the documented unknown category, available
    assert items.to_pylist() == [
        {"item_id": "sku-1", "category": "unknown", "brand": None, "price": None, "title": None, "available": True},
        {"item_id": "sku-2", "category": "unknown", "brand": None, "price": None, "title": None, "available": True},
    ]


def test_unix_seconds_with_item_columns_and_own_event_seq(tmp_path):
    events = write_csv(
        tmp_path / "events.csv",
        """
user_id,item_id,event_type,event_ts,event_seq,session_id,category,price,available
u1,a,view,1709251200,7,s1,shoes,10.5,
u1,a,cart,1709251260,8,s1,,11.0,false
u1,b,view,1709251260.5,9,s1,bags,,
""",
    )
    got, items = load_events_file(events)
    assert got.column("event_ts").to_pylist()[2] == pd.Timestamp(1709251260.5, unit="s", tz="UTC")
    assert got.column("event_seq").to_pylist() == [7, 8, 9] and got.column("session_id").to_pylist() == ["s1"] * 3
    # per item the last value that is set, in file order
    assert items.to_pylist() == [
        {"item_id": "a", "category": "shoes", "brand": None, "price": 11.0, "title": None, "available": False},
        {"item_id": "b", "category": "bags", "brand": None, "price": None, "title": None, "available": True},
    ]


@pytest.mark.parametrize("scale,unit", [(1_000, "milliseconds"), (1_000_000, "microseconds")])
def test_timestamps_in_another_unit_are_refused_naming_it(tmp_path, scale, unit):
    events = write_csv(tmp_path / "events.csv", f"user_id,item_id,event_type,event_ts\nu1,a,view,{1709251200 * scale}")
    with pytest.raises(
        timestamps.TimestampError, match=f"row 1: {1709251200 * scale} unix seconds; it reads as {unit}"
    ):
        load_events_file(events)


@pytest.mark.parametrize(
    "value,shown",
    [
        ("2099-01-01T00:00:00Z", "2099-01-01 00:00:00"),  # ISO text was not range-checked at all
        ("4070908800", "4070908800 unix seconds"),  # 2099 in seconds passed the file loader's own 1990-2100 check
        ("1989-12-31", "1989-12-31 00:00:00"),
    ],
)
def test_case03_events_file_times_get_the_loaders_one_range_check(tmp_path, value, shown):
    first = "1709251200" if value.isdigit() else "2024-03-01"
    events = write_csv(
        tmp_path / "events.csv", f"user_id,item_id,event_type,event_ts\nu1,a,view,{first}\nu1,b,view,{value}"
    )
    with pytest.raises(
        timestamps.TimestampError,
        match=rf"events.csv: column 'event_ts': 1 timestamp\(s\) outside 1990-01-01 .. .* UTC; first at row 2: {shown}",
    ):
        load_events_file(events)
    if value.isdigit():
        return
    parquet = tmp_path / "events.parquet"  # a Parquet timestamp column gets the same check
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1"],
                "item_id": ["a"],
                "event_type": ["view"],
                "event_ts": pa.array([pd.Timestamp(value)], pa.timestamp("us")),
            }
        ),
        parquet,
    )
    with pytest.raises(timestamps.TimestampError, match="first at row 1"):
        load_events_file(parquet)


def test_text_that_is_no_timestamp_is_refused_with_examples(tmp_path):
    events = write_csv(
        tmp_path / "events.csv", "user_id,item_id,event_type,event_ts\nu1,a,view,yesterday\nu1,a,view,2024-03-01"
    )
    with pytest.raises(LoaderError, match=r"neither unix seconds nor ISO-8601, e.g. \['yesterday'\]"):
        load_events_file(events)


def test_event_map_maps_and_unknown_types_are_listed_with_counts(tmp_path):
    events = write_csv(
        tmp_path / "events.csv",
        """
user_id,item_id,event_type,event_ts
u1,a,page_view,1709251200
u1,a,add_to_cart,1709251201
u1,a,order,1709251202
u1,a,order,1709251203
u1,a,refund,1709251204
""",
    )
    with pytest.raises(
        LoaderError, match="unknown event type.* order 2, add_to_cart 1, page_view 1, refund 1; map them"
    ):
        load_events_file(events)
    got, _ = load_events_file(
        events, event_map={"page_view": "view", "add_to_cart": "cart", "order": "purchase", "refund": "purchase"}
    )
    assert got.column("event_type").to_pylist() == ["view", "cart", "purchase", "purchase", "purchase"]


def test_items_file_and_parquet_events(tmp_path):
    table = pa.table(
        {
            "user_id": ["u1", "u1"],
            "item_id": ["a", "zz"],
            "event_type": ["view", "fav"],
            "event_ts": pa.array([1709251200_000000, 1709251300_000000], pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    items = write_csv(tmp_path / "items.csv", "item_id,category,brand,title\na,shoes,acme,Red shoe\nb,,acme,\n")
    got, catalogue = load_events_file(tmp_path / "events.parquet", items)
    assert got.column("event_ts").to_pylist() == table.column("event_ts").to_pylist()
    assert catalogue.to_pylist() == [
        {"item_id": "a", "category": "shoes", "brand": "acme", "price": None, "title": "Red shoe", "available": True},
        {"item_id": "b", "category": "unknown", "brand": "acme", "price": None, "title": None, "available": True},
    ]


@pytest.mark.parametrize(
    "text,message",
    [
        ("user_id,item_id,event_ts\nu1,a,1709251200", r"missing column\(s\) \['event_type'\]"),
        ("user_id,item_id,event_type\nu1,a,view", r"missing column\(s\) \['event_ts \(or timestamp\)'\]"),
        ("user_id,item_id,event_type,event_ts\n,a,view,1709251200", "'user_id' has 1 empty value"),
        (
            "user_id,item_id,event_type,event_ts,timestamp\nu1,a,view,1709251200,1709251200",
            "both event_ts and timestamp",
        ),
        ("user_id,item_id,event_type,event_ts,event_seq\nu1,a,view,1709251200,first", "event_seq has 1 value"),
        ("user_id,item_id,event_type,event_ts", "no rows"),
    ],
)
def test_bad_events_files_are_refused(tmp_path, text, message):
    with pytest.raises(LoaderError, match=message):
        load_events_file(write_csv(tmp_path / "events.csv", text))


def test_source_to_extract_end_to_end_counts_events_on_items_missing_from_the_items_file(tmp_path):
    events = write_csv(
        tmp_path / "events.csv",
        """
user_id,item_id,event_type,timestamp
u1,a,page_view,1709251200
u1,b,page_view,1709251300
u1,zz,order,1709251400
""",
    )
    write_csv(tmp_path / "items.csv", "item_id,category\na,shoes\nb,bags")
    source = f"events:{events},items:{tmp_path / 'items.csv'},event_map=page_view:view,order:purchase"
    warehouse = tmp_path / "wh.duckdb"
    assert duckdb_warehouse.build_warehouse(source, warehouse) == {"events": 3, "items": 2}
    manifest = extract_stage.run(sources.parse(source).warehouse_uri(warehouse), tmp_path / "out")
    assert manifest["rows"]["events"] == 2 and manifest["dropped"]["events"] == {"unknown_item": 1}


def test_source_strings_parse_and_bad_ones_say_what_is_expected():
    parsed = sources.parse("events:/d/e.csv,items:/d/i.parquet,event_map=page_view:view,order:purchase")
    assert (parsed.path, parsed.items_path) == ("/d/e.csv", "/d/i.parquet")
    assert parsed.event_map == {"page_view": "view", "order": "purchase"}
    assert (
        sources.parse("ga4:/exports,user_key=user_pseudo_id").warehouse_uri("/w.duckdb")
        == "duckdb:///w.duckdb?user_key=user_pseudo_id"
    )
    assert sources.parse("ga4:/exports").warehouse_uri("/w.duckdb") == "duckdb:///w.duckdb"
    for bad, message in [
        ("events:/e.csv,event_map=view:click", "event_map entry 'view:click'"),
        ("events:/e.csv,color=red", "unexpected option 'color=red'"),
        ("ga4:/x,user_key=email", "user_key='email'"),
        ("taobao:/t.csv,items:/i.csv", "takes no options"),
        ("ga5:/x", "must be one of"),
    ]:
        with pytest.raises(sources.SourceError, match=message):
            sources.parse(bad)


def test_a_ga4_folder_or_events_source_is_recorded_so_an_unchanged_one_is_reused(tmp_path):
    import shutil
    from pathlib import Path

    export = tmp_path / "export"
    shutil.copytree(Path(__file__).parents[1] / "extract" / "ga4_export", export)
    warehouse = tmp_path / "wh.duckdb"
    assert duckdb_warehouse.ensure_warehouse(f"ga4:{export}", warehouse) == {"ga4_events": 22}
    assert duckdb_warehouse.ensure_warehouse(f"ga4:{export},user_key=user_pseudo_id", warehouse) is None
    (export / "events_20240302.json").write_text((export / "events_20240302.json").read_text().splitlines()[0] + "\n")
    assert duckdb_warehouse.ensure_warehouse(f"ga4:{export}", warehouse) == {"ga4_events": 18}
    events = write_csv(tmp_path / "events.csv", "user_id,item_id,event_type,event_ts\nu1,a,page_view,1709251200")
    with pytest.raises(duckdb_warehouse.SourceMismatch, match="holds the warehouse of ga4:"):
        duckdb_warehouse.ensure_warehouse(f"events:{events},event_map=page_view:view", warehouse)
