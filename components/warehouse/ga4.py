"""GA4's BigQuery export (`analytics_<property>.events_YYYYMMDD`) as files: loaded into DuckDB, and written.

Loading: `bq extract` writes a daily table as newline-delimited JSON (INT64 values as strings, NULL fields left out)
or as Parquet. Either lands in one DuckDB table, `ga4_events`, with its nested types intact (`event_params` and
`items` stay arrays of structs), plus a `_TABLE_SUFFIX` column equal to `event_date`: the daily table's suffix, so
the extract's BigQuery SQL over `events_*` runs unchanged (components/extract/queries/ga4_*.sql). Only the columns
that SQL reads are loaded; the rest of an export row (device, geo, traffic_source, ...) is not needed.

Writing: any contract tables (schema.EVENTS, ITEMS, IMPRESSIONS) become export rows, one file per day as
`bq extract` names them, so the synthetic shop and the Taobao bench can be run through the GA4 path
(`python -m components.warehouse.ga4_export`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa

TABLE = "ga4_events"
# The GA4 event names that queries/ga4_events.sql maps onto schema.EVENT_TYPES; the writer maps them back.
EVENT_NAMES = {"view_item": "view", "add_to_cart": "cart", "add_to_wishlist": "fav", "purchase": "purchase"}
# Which GA4 column identifies a user: user_id falling back to user_pseudo_id, or user_pseudo_id always.
USER_KEYS = ("user_id", "user_pseudo_id")

_VALUE = "STRUCT(string_value VARCHAR, int_value BIGINT, float_value DOUBLE, double_value DOUBLE)"
_ITEM_FIELDS = {
    **{
        name: "VARCHAR"
        for name in (
            "item_id",
            "item_name",
            "item_brand",
            "item_variant",
            "item_category",
            "item_category2",
            "item_category3",
            "item_category4",
            "item_category5",
        )
    },
    "price_in_usd": "DOUBLE",
    "price": "DOUBLE",
    "quantity": "BIGINT",
    "item_revenue_in_usd": "DOUBLE",
    "item_revenue": "DOUBLE",
    "item_refund_in_usd": "DOUBLE",
    "item_refund": "DOUBLE",
    **{
        name: "VARCHAR"
        for name in (
            "coupon",
            "affiliation",
            "location_id",
            "item_list_id",
            "item_list_name",
            "item_list_index",
            "promotion_id",
            "promotion_name",
            "creative_name",
            "creative_slot",
        )
    },
}
ITEM_TYPE = "STRUCT(" + ", ".join(f"{name} {kind}" for name, kind in _ITEM_FIELDS.items()) + ")[]"
# The export's columns that the extract reads, with their BigQuery types in DuckDB's spelling.
COLUMNS = {
    "event_date": "VARCHAR",
    "event_timestamp": "BIGINT",
    "event_name": "VARCHAR",
    "event_params": f"STRUCT(key VARCHAR, value {_VALUE})[]",
    "event_bundle_sequence_id": "BIGINT",
    "user_id": "VARCHAR",
    "user_pseudo_id": "VARCHAR",
    "items": ITEM_TYPE,
}
REQUIRED = ("event_date", "event_timestamp", "event_name", "user_pseudo_id")
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)


class GA4Error(ValueError):
    """Files that are not a GA4 export as `bq extract` writes it: names the file and the problem."""


def export_files(path: str | Path) -> tuple[str, list[Path]]:
    """('json' | 'parquet', files) of one export file or of a folder of `events_*` files (intraday tables too)."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.startswith("events_"))
        if not files:
            raise GA4Error(f"{path}: no events_* files (GA4 daily tables as `bq extract` writes them)")
    else:
        raise GA4Error(f"{path}: no such file or folder")
    kinds = {
        "json" if p.name.endswith(JSON_SUFFIXES) else "parquet" if p.name.endswith(PARQUET_SUFFIXES) else None
        for p in files
    }
    if None in kinds:
        odd = [p.name for p in files if not p.name.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES)][:5]
        raise GA4Error(f"{path}: {odd} are neither newline-delimited JSON ({', '.join(JSON_SUFFIXES)}) nor Parquet")
    if len(kinds) > 1:
        raise GA4Error(f"{path}: mixes JSON and Parquet files; export the tables in one format")
    return kinds.pop(), files


def _reader(kind: str, files: list[Path], columns: dict[str, str] | None = None) -> str:
    names = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
    if kind == "parquet":
        return f"read_parquet({names}, union_by_name = true)"
    typed = "" if columns is None else ", columns = {" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"
    return f"read_json({names}, format = 'newline_delimited'{typed})"


def load(con: duckdb.DuckDBPyConnection, path: str | Path) -> int:
    """Creates table ga4_events in `con` from the export at `path`; returns its row count.

    A file without event_date, event_timestamp, event_name or user_pseudo_id is no export and fails here; an export
    without `items` loads without it, so that the extract names it as it would on BigQuery.
    """
    kind, files = export_files(path)
    try:
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {_reader(kind, files)}").fetchall()}
    except duckdb.Error as err:
        raise GA4Error(f"{path}: not a readable {kind} GA4 export: {err}".splitlines()[0]) from err
    missing = [c for c in REQUIRED if c not in present]
    if missing:
        raise GA4Error(f"{path}: no column(s) {missing}: not a GA4 export (expected {list(COLUMNS)})")
    # JSON leaves NULL fields out, so a column that no row sets (user_id without sign-in) is NULL, not missing.
    # Only `items` is dropped when no row has it (JSON) or the schema lacks it (Parquet): the extract refuses that.
    columns = {name: kind_ for name, kind_ in COLUMNS.items() if name != "items" or kind == "json" or name in present}
    if kind == "json":
        source, select = _reader(kind, files, columns), ", ".join(columns)
    else:  # Parquet keeps BigQuery's types; a cast by name fills struct fields that the file lacks with NULL
        source = _reader(kind, files)
        select = ", ".join(
            (f"CAST({name} AS {kind_})" if name in present else f"CAST(NULL AS {kind_})") + f" AS {name}"
            for name, kind_ in columns.items()
        )
    try:
        con.execute(f'CREATE TABLE {TABLE} AS SELECT {select}, event_date AS "_TABLE_SUFFIX" FROM {source}')
    except duckdb.Error as err:
        raise GA4Error(f"{path}: cannot load as a GA4 export: {err}".splitlines()[0]) from err
    if kind == "json" and con.execute(f"SELECT COUNT(items) FROM {TABLE}").fetchone()[0] == 0:
        con.execute(f"ALTER TABLE {TABLE} DROP COLUMN items")
    return con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]


# ---- writing ------------------------------------------------------------------------------------
def _export_rows_sql(with_impressions: bool) -> str:
    """Contract tables -> export rows: one row per (user, event type, timestamp), so a basket bought at one instant
    is one `purchase` with several items; a `page_view` beside every `view_item` (GA4 logs both, and the extract
    must drop it by name); a `view_item_list` per logged slate with `item_list_index` as the 1-based position."""
    name = "CASE e.event_type " + " ".join(f"WHEN '{v}' THEN '{k}'" for k, v in EVENT_NAMES.items()) + " END"
    item = (
        "struct_pack(item_id := e.item_id, item_name := i.title, item_brand := i.brand, "
        "item_category := i.category, price := i.price, quantity := 1, item_list_index := {index})"
    )
    lists = (
        f"""
      UNION ALL
      SELECT m.user_id, 'view_item_list' AS event_name, epoch_us(m.event_ts) AS ts, NULL AS session_id,
             list({item.format(index="CAST(m.position + 1 AS VARCHAR)").replace("e.", "m.")} ORDER BY m.position)
      FROM impressions AS m LEFT JOIN items AS i ON i.item_id = m.item_id
      GROUP BY m.user_id, m.request_id, m.event_ts"""
        if with_impressions
        else ""
    )
    return f"""
    WITH grouped AS (
      SELECT e.user_id, {name} AS event_name, epoch_us(e.event_ts) AS ts, MIN(e.session_id) AS session_id,
             list({item.format(index="NULL")} ORDER BY e.event_seq) AS items
      FROM events AS e LEFT JOIN items AS i ON i.item_id = e.item_id
      GROUP BY e.user_id, e.event_type, e.event_ts
      {lists}
    ),
    sessions AS (
      SELECT *, MIN(ts) OVER (PARTITION BY user_id, session_id) // 1000000 AS session_start FROM grouped
    ),
    with_pages AS (
      SELECT * FROM sessions
      UNION ALL
      SELECT user_id, 'page_view', ts, session_id, NULL, session_start FROM sessions WHERE event_name = 'view_item'
    )
    SELECT
      strftime(make_timestamp(ts), '%Y%m%d') AS event_date,
      ts AS event_timestamp,
      event_name,
      list_concat(
        CASE WHEN session_id IS NULL THEN [] ELSE [struct_pack(key := 'ga_session_id', value := struct_pack(
          string_value := NULL::VARCHAR, int_value := session_start, float_value := NULL::DOUBLE,
          double_value := NULL::DOUBLE))] END,
        [struct_pack(key := 'page_location', value := struct_pack(string_value := 'https://shop.example/',
          int_value := NULL::BIGINT, float_value := NULL::DOUBLE, double_value := NULL::DOUBLE))]
      ) AS event_params,
      CASE WHEN hash(user_id) % 3 = 0 THEN user_id END AS user_id,
      CAST(hash(user_id) AS VARCHAR) || '.' || CAST(MIN(ts) OVER (PARTITION BY user_id) // 1000000 AS VARCHAR)
        AS user_pseudo_id,
      CASE WHEN len(items) > 0 THEN items END AS items
    FROM with_pages
    """


def write_export(
    out_dir: str | Path, events: pa.Table, items: pa.Table, impressions: pa.Table | None = None, fmt: str = "json"
) -> dict[str, int]:
    """Writes the contract tables as GA4 daily export files `events_YYYYMMDD.{json,parquet}` into out_dir.

    A third of the users carry a `user_id` (signed in), every row a `user_pseudo_id`. JSON is written as `bq extract`
    does: INT64 as strings. The folder appears only when complete. Returns {"files", "rows"}.
    """
    if fmt not in ("json", "parquet"):
        raise GA4Error(f"format {fmt!r}: expected json or parquet")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise GA4Error(f"{out_dir} exists; choose a new folder")
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir(parents=True)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("events", events)
        con.register("items", items)
        if impressions is not None:
            con.register("impressions", impressions)
        con.execute(f"CREATE TABLE export AS {_export_rows_sql(impressions is not None)}")
        days = [row[0] for row in con.execute("SELECT DISTINCT event_date FROM export ORDER BY 1").fetchall()]
        for day in days:
            target = str(staging / f"events_{day}.{fmt}").replace("'", "''")
            if fmt == "json":  # bq extract writes INT64 as JSON strings
                query = f"""SELECT event_date, CAST(event_timestamp AS VARCHAR) AS event_timestamp, event_name,
                  [struct_pack(key := p.key, value := struct_pack(string_value := p.value.string_value,
                     int_value := CAST(p.value.int_value AS VARCHAR))) FOR p IN event_params] AS event_params,
                  user_id, user_pseudo_id,
                  [struct_pack(item_id := x.item_id, item_name := x.item_name, item_brand := x.item_brand,
                     item_category := x.item_category, price := x.price, quantity := CAST(x.quantity AS VARCHAR),
                     item_list_index := x.item_list_index) FOR x IN items] AS items
                FROM export WHERE event_date = '{day}' ORDER BY event_timestamp"""
                con.execute(f"COPY ({query}) TO '{target}' (FORMAT JSON)")
            else:
                con.execute(
                    f"COPY (SELECT * FROM export WHERE event_date = '{day}' ORDER BY event_timestamp) "
                    f"TO '{target}' (FORMAT PARQUET)"
                )
        rows = con.execute("SELECT COUNT(*) FROM export").fetchone()[0]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        con.close()
    os.replace(staging, out_dir)
    return {"files": len(days), "rows": rows}
