"""The GA4 branch of extract: a hand-written export (tests/extract/ga4_export, rows shaped like Google's public
sample), the synthetic shop written as GA4 files, and every bad input of the GA4 path with its count or error."""

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.extract import runner
from components.extract import stage as extract_stage
from components.warehouse import duckdb_warehouse, engines, ga4

FIXTURE = Path(__file__).parent / "ga4_export"
A, B, D = "1736170421.1709251200", "cust-1042", "777301254.1709280000"
BIKE, TEE, HAT = "GGOEGAAX0104", "GGOEGDHC018299", "GGOEYOLR018699"


def ts(seconds):
    return pd.Timestamp(seconds, unit="s", tz="UTC")


def ga4_warehouse(tmp_path, export=FIXTURE, name="ga4.duckdb"):
    path = tmp_path / name
    duckdb_warehouse.build_warehouse(f"ga4:{export}", path)
    return path


def extract(tmp_path, warehouse, out="out", **kwargs):
    manifest = extract_stage.run(f"duckdb://{warehouse}", tmp_path / out, **kwargs)

    def read(name):
        return pq.read_table(tmp_path / out / name).to_pandas()

    return manifest, read("events.parquet"), read("items.parquet")


def test_hand_written_export_gives_the_events_items_and_counts_worked_out_by_hand(tmp_path):
    manifest, events, items = extract(tmp_path, ga4_warehouse(tmp_path))
    expected = pd.DataFrame(
        [
            (A, BIKE, "view", 1709251210, 1, "1709251200"),
            (A, BIKE, "cart", 1709251250, 2, "1709251200"),
            (A, TEE, "view", 1709251300, 3, "1709251200"),
            (A, BIKE, "purchase", 1709251400, 4, "1709251200"),
            (A, TEE, "purchase", 1709251400, 5, "1709251200"),
            (A, HAT, "view", 1709337700, 6, "1709337690"),
            (D, TEE, "view", 1709280020, 1, "1709280000"),
            (B, HAT, "view", 1709262010, 1, "1709262000"),
            (B, HAT, "fav", 1709262020, 2, "1709262000"),
            (B, BIKE, "view", 1709262030, 3, "1709262000"),
            # one instant, two events: the view comes before the cart
            (B, HAT, "view", 1709262040, 4, "1709262000"),
            (B, BIKE, "cart", 1709262040, 5, "1709262000"),
            (B, BIKE, "purchase", 1709337800, 6, "1709337780"),
            (B, HAT, "purchase", 1709337800, 7, "1709337780"),
        ],
        columns=["user_id", "item_id", "event_type", "event_ts", "event_seq", "session_id"],
    )
    expected["event_ts"] = expected.event_ts.map(ts)
    expected = expected.sort_values(["user_id", "event_ts", "event_seq"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(events, expected, check_dtype=False)

    assert items.to_dict("records") == [
        # the latest price (40 from 1 March evening on) and the category that a later row left empty
        {
            "item_id": BIKE,
            "category": "Bags",
            "brand": "Google",
            "price": 40.0,
            "title": "Google Campus Bike",
            "available": True,
        },
        # '(not set)' everywhere: the documented unknown category
        {
            "item_id": TEE,
            "category": "unknown",
            "brand": "Google",
            "price": 22.0,
            "title": "Google Woodland Tee",
            "available": True,
        },
        {
            "item_id": HAT,
            "category": "Hats",
            "brand": "YouTube",
            "price": 24.0,
            "title": "YouTube Leather Strap Hat",
            "available": True,
        },
    ]
    assert manifest["rows"] == {"events": 14, "users": 3, "items": 3}
    assert manifest["dropped"] == {
        "events": {},  # the contract's reasons, as for any warehouse: nothing here
        "ga4_rows": {
            "event_name:page_view": 3,
            "event_name:session_start": 2,
            "event_name:view_item_list": 1,
            "event_name:view_promotion": 1,
            "no_items": 1,
            "no_user_id": 1,
        },
        "ga4_items": {"no_item_id": 1},
    }
    assert manifest["ga4"]["rows_scanned"] == 22
    assert manifest["ga4"]["kept_rows_sharing_user_timestamp"] == 2
    assert manifest["ga4"]["list_impressions"] == 4
    assert "propensit" in manifest["ga4"]["impressions"]
    assert not (tmp_path / "out" / "impressions.parquet").exists()


def test_user_key_option_takes_the_pseudo_id_even_for_signed_in_users(tmp_path):
    warehouse = ga4_warehouse(tmp_path)
    manifest = extract_stage.run(f"duckdb://{warehouse}?user_key=user_pseudo_id", tmp_path / "out")
    users = set(pq.read_table(tmp_path / "out" / "events.parquet").column("user_id").to_pylist())
    assert users == {A, D, "920571395.1709262000"}
    assert manifest["ga4"]["user_key"] == "user_pseudo_id"
    with pytest.raises(engines.WarehouseError, match="user_key"):
        extract_stage.run(f"duckdb://{warehouse}?user_key=email", tmp_path / "bad")


def test_window_cuts_on_event_timestamp_and_scans_only_the_daily_tables_around_it(tmp_path):
    warehouse = ga4_warehouse(tmp_path)
    manifest, events, _ = extract(tmp_path, warehouse, window_start="2024-03-02", window_end="2024-03-03")
    assert events.event_ts.min() >= ts(1709337600) and len(events) == 3  # A's hat view, B's two purchases
    assert manifest["ga4"]["rows_scanned"] == 5

    # a day three days later: the window's suffixes do not reach 20240301 or 20240302, and nothing is there
    with pytest.raises(runner.ExtractError, match="no ecommerce events .* 0 export row"):
        extract(tmp_path, warehouse, out="later", window_start="2024-03-05", window_end="2024-03-06")
    assert not (tmp_path / "later").exists()


def test_event_types_and_min_events_are_applied_and_counted(tmp_path):
    manifest, events, _ = extract(tmp_path, ga4_warehouse(tmp_path), event_types="view,purchase", min_events_per_user=2)
    assert set(events.event_type) == {"view", "purchase"} and set(events.user_id) == {A, B}
    assert manifest["dropped"]["ga4_items"] == {"no_item_id": 1}
    assert manifest["dropped"]["events"] == {"event_type_not_selected": 3, "user_below_min_events": 1}
    assert manifest["rows"]["events"] == 14 - 3 - 1


def test_parquet_export_extracts_like_the_json_one(tmp_path):
    con = duckdb_warehouse.connect(ga4_warehouse(tmp_path))
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    for day in ("20240301", "20240302"):  # as `bq extract --destination_format PARQUET` writes a daily table
        con.execute(
            f"COPY (SELECT * EXCLUDE (_TABLE_SUFFIX) FROM ga4_events WHERE event_date = '{day}') "
            f"TO '{parquet_dir / f'events_{day}.parquet'}' (FORMAT PARQUET)"
        )
    con.close()
    from_json = extract(tmp_path, ga4_warehouse(tmp_path, name="again.duckdb"), out="json")
    from_parquet = extract(tmp_path, ga4_warehouse(tmp_path, parquet_dir, "pq.duckdb"), out="pq")
    pd.testing.assert_frame_equal(from_json[1], from_parquet[1])
    pd.testing.assert_frame_equal(from_json[2], from_parquet[2])
    assert from_json[0]["dropped"] == from_parquet[0]["dropped"]


def test_synthetic_shop_as_ga4_extracts_the_same_histories_as_its_contract_tables(tmp_path):
    contract = tmp_path / "shop.duckdb"
    duckdb_warehouse.build_warehouse("synthetic:tiny", contract, seed=1)
    con = duckdb_warehouse.connect(contract)
    tables = {t: con.execute(f"SELECT * FROM {t}").to_arrow_table() for t in ("events", "items", "impressions")}
    con.close()
    ga4.write_export(tmp_path / "export", tables["events"], tables["items"], tables["impressions"])
    _, from_ga4, ga4_items = extract(tmp_path, ga4_warehouse(tmp_path, tmp_path / "export"), out="ga4")
    _, from_contract, _ = extract(tmp_path, contract, out="contract")

    def histories(events):  # user ids differ (GA4 pseudo ids); each user's ordered history must not
        ordered = events.sort_values(["user_id", "event_ts", "event_seq"])
        return sorted(tuple(zip(g.item_id, g.event_type, g.event_ts)) for _, g in ordered.groupby("user_id"))

    assert histories(from_ga4) == histories(from_contract)
    catalogue = tables["items"].to_pandas().set_index("item_id")
    seen = ga4_items.set_index("item_id")
    assert (seen.category == catalogue.loc[seen.index, "category"]).all()
    assert seen.price.equals(catalogue.loc[seen.index, "price"])


def write_export(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir()
    (folder / "events_20240301.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def row(name, seconds, items=None, **extra):
    return {
        "event_date": "20240301",
        "event_timestamp": str(seconds * 1_000_000),
        "event_name": name,
        "event_params": [],
        "user_pseudo_id": "42.1709251200",
        **({"items": items} if items is not None else {}),
        **extra,
    }


def test_export_without_items_is_refused_by_name(tmp_path):
    export = write_export(tmp_path / "export", [row("page_view", 1709251200), row("view_item", 1709251210)])
    with pytest.raises(runner.ExtractError, match=r"lacks column\(s\) \['items'\].*nothing to recommend"):
        extract(tmp_path, ga4_warehouse(tmp_path, export))
    assert not (tmp_path / "out").exists()


def test_property_without_ecommerce_events_is_refused_with_its_event_names(tmp_path):
    rows = [row("page_view", 1709251200 + i, []) for i in range(3)] + [row("scroll", 1709251300, [])]
    rows.append(row("view_item_list", 1709251400, [{"item_id": "SKU-1", "item_list_index": "1"}]))
    export = write_export(tmp_path / "export", rows)
    with pytest.raises(runner.ExtractError, match="no ecommerce events .* 5 export row.*page_view 3, scroll 1"):
        extract(tmp_path, ga4_warehouse(tmp_path, export))


def test_folder_checks(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ga4.GA4Error, match="no events_"):
        ga4.export_files(tmp_path / "empty")
    mixed = write_export(tmp_path / "mixed", [row("view_item", 1709251210, [{"item_id": "SKU-1"}])])
    shutil.copy(FIXTURE / "events_20240302.json", mixed / "events_20240302.parquet")
    with pytest.raises(ga4.GA4Error, match="mixes JSON and Parquet"):
        ga4.export_files(mixed)
    not_ga4 = tmp_path / "events_other.json"
    not_ga4.write_text('{"user": "u1", "ts": 3}\n')
    with pytest.raises(
        ga4.GA4Error,
        match=r"no column\(s\) \['event_date', 'event_timestamp', 'event_name', "
        r"'user_pseudo_id'\]: not a GA4 export",
    ):
        ga4_warehouse(tmp_path, not_ga4)
    assert not (tmp_path / "ga4.duckdb").exists()


def test_manifest_window_and_user_key_reach_bigquery_as_typed_parameters(tmp_path):
    """The rendered BigQuery SQL reads the wildcard table and passes @user_key; no value is spliced into the text."""
    backend = _RecordingBigQuery()
    with pytest.raises(runner.ExtractError, match="no ecommerce events"):
        extract_stage.run(
            "bigquery://my-project.analytics_123456?user_key=user_pseudo_id",
            tmp_path / "bq",
            window_start=dt.datetime(2024, 3, 1),
            window_end="2024-03-02",
            backend=backend,
        )
    (drops,) = [q for q in backend.queries if "'scanned'" in q[0]]
    assert "`my-project`.`analytics_123456`.`events_*`" in drops[0] and "_TABLE_SUFFIX" in drops[0]
    assert drops[1]["user_key"] == "user_pseudo_id" and "@user_key" in drops[0]
    assert drops[1]["window_start"] == dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)


class _RecordingBigQuery:
    """A BigQuery backend double that holds a GA4 dataset with no rows: records each query and its parameters."""

    dialect = "bigquery"

    def __init__(self):
        self.tables = {
            "events": "my-project.analytics_123456.events",
            "ga4_events": "my-project.analytics_123456.events_*",
        }
        self.queries = []

    def columns(self, table):
        return set(ga4.COLUMNS) if table == "ga4_events" else None

    def batches(self, sql, params):
        import pyarrow as pa

        self.queries.append((sql, params))
        if "'scanned'" in sql:
            yield pa.RecordBatch.from_pydict({"kind": ["rows"], "reason": ["scanned"], "n": [0]})

    def close(self):
        pass


def test_case04_ga4_duplicate_rows_and_future_events_are_dropped_and_counted_as_for_any_warehouse(tmp_path):
    """The GA4 branch runs the contract queries over the export's events, so their drops are the same."""
    sku = [{"item_id": "SKU-1", "item_category": "Shoes"}]
    rows = [
        row("view_item", 1709251200, sku),
        row("view_item", 1709251200, sku),  # GA4 exports an event twice now and then: an exact duplicate
        row("add_to_cart", 1709251200, sku),  # the same instant, another event: kept
        row("purchase", 1709251300, sku),
        row("view_item", 4070908800, sku),  # 2099, after the run time: would have been the test target
    ]
    export = write_export(tmp_path / "export", rows)
    manifest, events, _ = extract(tmp_path, ga4_warehouse(tmp_path, export), run_time="2024-03-02T00:00:00Z")
    assert manifest["dropped"]["events"] == {"duplicate_row": 1, "future_event": 1}
    assert manifest["run_time"] == "2024-03-02T00:00:00+00:00"
    assert events[["event_type", "event_seq"]].values.tolist() == [["view", 1], ["cart", 2], ["purchase", 3]]


def test_ga4_with_a_catalogue_file_reads_the_items_from_it(tmp_path):
    """SOURCE=ga4:<folder>,items:<file>: the catalogue (category, availability) comes from the shop's table, and
    events on items it lacks are dropped as unknown_item, as for any warehouse."""
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        "item_id,category,brand,price,available\n"
        f"{BIKE},Bikes,Google,45.0,false\n{TEE},Tops,,22.0,\nGGOE-NEVER-SEEN,Mugs,,5.0,true\n"
    )
    warehouse = tmp_path / "ga4.duckdb"
    counts = duckdb_warehouse.build_warehouse(f"ga4:{FIXTURE},items:{catalogue}", warehouse)
    assert counts == {"ga4_events": 22, "items": 3}
    manifest, events, items = extract(tmp_path, warehouse)
    assert HAT not in set(events.item_id) and len(events) == 14 - 5  # the hat's five events: not in the catalogue
    assert manifest["dropped"]["events"] == {"unknown_item": 5}
    assert manifest["ga4"]["catalogue"] == "items"
    assert items[["item_id", "category", "price", "available"]].values.tolist() == [
        ["GGOE-NEVER-SEEN", "Mugs", 5.0, True],
        [BIKE, "Bikes", 45.0, False],
        [TEE, "Tops", 22.0, True],
    ]
    assert "items" in manifest["dropped"]  # the catalogue's own rows are checked as items.sql does
    record = duckdb_warehouse.source_record(f"ga4:{FIXTURE},items:{catalogue}")
    assert str(catalogue.resolve()) in record["source"]  # a changed catalogue file reloads the warehouse


def test_rows_before_a_sign_in_join_the_user_id_their_pseudo_id_signs_in_with(tmp_path):
    """GA4 sets user_id only on the events after setUserId, so a shopper browses under the pseudo id and buys under
    the user id: the pseudo id's rows without user_id take its one user_id, or the purchase would be a user of its
    own (below min_events_per_user, dropped) and the browsing one without it. A browser that two user ids signed
    in on (a shared computer) keeps its anonymous rows under the pseudo id; one that never signed in is unchanged."""
    sku = [{"item_id": f"SKU-{i}"} for i in range(4)]
    rows = [
        # 11.1: views anonymously, signs in at checkout, buys
        row("view_item", 1709251200, sku[0:1], user_pseudo_id="11.1"),
        row("view_item", 1709251210, sku[1:2], user_pseudo_id="11.1"),
        row("login", 1709251220, [], user_pseudo_id="11.1", user_id="cust-7"),
        row("add_to_cart", 1709251230, sku[1:2], user_pseudo_id="11.1", user_id="cust-7"),
        row("purchase", 1709251240, sku[1:2], user_pseudo_id="11.1", user_id="cust-7"),
        # 22.2: cust-8 and cust-9 both sign in on it; its anonymous views stay under 22.2
        row("view_item", 1709251300, sku[2:3], user_pseudo_id="22.2"),
        row("view_item", 1709251310, sku[3:4], user_pseudo_id="22.2"),
        row("view_item", 1709251320, sku[0:1], user_pseudo_id="22.2"),
        row("view_item", 1709251330, sku[2:3], user_pseudo_id="22.2", user_id="cust-8"),
        row("view_item", 1709251340, sku[3:4], user_pseudo_id="22.2", user_id="cust-9"),
        # 33.3: never signs in
        row("view_item", 1709251400, sku[0:1], user_pseudo_id="33.3"),
    ]
    export = write_export(tmp_path / "export", rows)
    warehouse = ga4_warehouse(tmp_path, export)
    manifest, events, _ = extract(tmp_path, warehouse, min_events_per_user=1)
    by_user = events.groupby("user_id").event_type.apply(list).to_dict()
    assert by_user == {
        "cust-7": ["view", "view", "cart", "purchase"],
        "22.2": ["view", "view", "view"],
        "cust-8": ["view"],
        "cust-9": ["view"],
        "33.3": ["view"],
    }
    assert events[events.user_id == "cust-7"].event_seq.tolist() == [1, 2, 3, 4]
    assert manifest["ga4"]["kept_rows_stitched_to_user_id"] == 2
    assert manifest["ga4"]["kept_rows_of_pseudo_ids_with_several_user_ids"] == 3
    assert manifest["dropped"]["ga4_rows"] == {"event_name:login": 1}

    manifest = extract_stage.run(f"duckdb://{warehouse}?user_key=user_pseudo_id", tmp_path / "pseudo")
    users = set(pq.read_table(tmp_path / "pseudo" / "events.parquet").column("user_id").to_pylist())
    assert users == {"11.1", "22.2", "33.3"}
    assert manifest["ga4"]["kept_rows_stitched_to_user_id"] == 0
