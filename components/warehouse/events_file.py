"""A shop's own events file (CSV or Parquet, the contract's columns) and optional items file as warehouse tables
(an items file also serves as the catalogue beside a GA4 export: SOURCE=ga4:<folder>,items:<file>).

Events: `user_id, item_id, event_type, event_ts` (`timestamp` is accepted for `event_ts`: ISO-8601, naive = UTC, or
unix seconds), optionally `event_seq` (else the file order) and `session_id`. Event types other than
schema.EVENT_TYPES go through `event_map` or are refused with their counts. Items come from the items file, else
from item columns of the events file (`category, brand, price, title, available`: per item the last value
that is not empty, in file order), else
from the item ids alone; a missing category is `unknown` and an item is available unless a column says not.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv

from components import schema
from components.warehouse import timestamps
from components.warehouse.loaders import LoaderError

UNKNOWN_CATEGORY = "unknown"
ITEM_COLUMNS = ("category", "brand", "price", "title", "available")


def read_table(path: str | Path) -> pa.Table:
    """A CSV (strings, as written) or Parquet file (its own types) as an Arrow table in file order."""
    path = Path(path)
    if not path.is_file():
        raise LoaderError(f"{path}: no such file")
    try:
        if path.name.endswith(".parquet"):
            table = pq.read_table(path)
        else:
            with path.open("rb") as handle:
                header = handle.readline().decode("utf-8", errors="replace").strip().split(",")
            table = csv.read_csv(
                path,
                convert_options=csv.ConvertOptions(
                    column_types={name.strip('"'): pa.string() for name in header}, strings_can_be_null=True
                ),
            )
    except (pa.ArrowInvalid, OSError) as err:
        raise LoaderError(
            f"{path}: not a readable {'Parquet' if path.name.endswith('.parquet') else 'CSV'} file: {err}".splitlines()[
                0
            ]
        ) from err
    if table.num_rows == 0:
        raise LoaderError(f"{path}: no rows")
    return table


def _event_times(con: duckdb.DuckDBPyConnection, column: str, path: Path) -> pa.Array:
    """`raw.<column>` as timestamp[us, UTC] in file order: numbers are unix seconds, text is ISO-8601; both go
    through components.warehouse.timestamps, the loaders' one range check (a number in ms or us is refused there,
    naming the unit it reads as)."""
    where = f"{path}: column {column!r}"
    kind = con.execute(f'SELECT typeof("{column}") FROM raw LIMIT 1').fetchone()[0]
    if not kind.startswith(("TIMESTAMP", "DATE")):
        numeric = f'TRY_CAST("{column}" AS DOUBLE)'
        n_numeric, n_values = con.execute(f'SELECT COUNT({numeric}), COUNT("{column}") FROM raw').fetchone()
        if n_numeric == n_values:
            seconds = con.execute(f"SELECT {numeric} FROM raw ORDER BY _row").fetchnumpy()
            return timestamps.from_unix_seconds(next(iter(seconds.values())), where)
        bad = con.execute(
            f'SELECT "{column}", COUNT(*) FROM raw WHERE "{column}" IS NOT NULL AND '
            f'TRY_CAST("{column}" AS TIMESTAMPTZ) IS NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 3'
        ).fetchall()
        if bad:
            raise LoaderError(
                f"{path}: {column} has value(s) that are neither unix seconds nor ISO-8601, e.g. "
                f"{[value for value, _ in bad]}"
            )
    times = con.execute(f'SELECT CAST("{column}" AS TIMESTAMPTZ) FROM raw ORDER BY _row').to_arrow_table().column(0)
    timestamps.check_timestamps(times, where)
    return times.cast(pa.timestamp("us", tz="UTC")).combine_chunks()


def _events_sql(con: duckdb.DuckDBPyConnection, columns: list[str], path: Path, event_map: dict[str, str]) -> str:
    missing = [c for c in ("user_id", "item_id", "event_type") if c not in columns]
    if "event_ts" not in columns and "timestamp" not in columns:
        missing.append("event_ts (or timestamp)")
    if missing:
        raise LoaderError(
            f"{path}: missing column(s) {missing}; the events contract is user_id,item_id,event_type,"
            "event_ts[,event_seq][,session_id] (see README, Use your own data)"
        )
    if "event_ts" in columns and "timestamp" in columns:
        raise LoaderError(f"{path}: has both event_ts and timestamp; keep one")
    for name in ("user_id", "item_id", "event_type", "event_ts" if "event_ts" in columns else "timestamp"):
        nulls = con.execute(f'SELECT COUNT(*) - COUNT("{name}") FROM raw').fetchone()[0]
        if nulls:
            raise LoaderError(f"{path}: column {name!r} has {nulls} empty value(s)")
    mapping = (
        "CASE CAST(event_type AS VARCHAR) "
        + " ".join(f"WHEN '{raw.replace(chr(39), chr(39) * 2)}' THEN '{to}'" for raw, to in event_map.items())
        + " ELSE CAST(event_type AS VARCHAR) END"
        if event_map
        else "CAST(event_type AS VARCHAR)"
    )
    known = ", ".join(f"'{t}'" for t in schema.EVENT_TYPES)
    unknown = con.execute(
        f"SELECT {mapping} AS t, COUNT(*) FROM raw WHERE {mapping} NOT IN ({known}) GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    if unknown:
        listed = ", ".join(f"{t} {n}" for t, n in unknown[:20])
        raise LoaderError(
            f"{path}: unknown event type(s) (with counts) {listed}; map them with "
            f"event_map=<type>:<{'|'.join(schema.EVENT_TYPES)}>,... in SOURCE, e.g. "
            f"SOURCE=events:{path},event_map={unknown[0][0]}:view"
        )
    if "event_seq" in columns:
        seq = con.execute("SELECT COUNT(*) - COUNT(TRY_CAST(event_seq AS BIGINT)) FROM raw").fetchone()[0]
        if seq:
            raise LoaderError(
                f"{path}: event_seq has {seq} value(s) that are not integers; drop the column to use the file order"
            )
    times = _event_times(con, "event_ts" if "event_ts" in columns else "timestamp", path)
    con.register("event_times", pa.table({"_row": pa.array(np.arange(len(times), dtype=np.int64)), "_event_ts": times}))
    return f"""SELECT CAST(user_id AS VARCHAR) AS user_id, CAST(item_id AS VARCHAR) AS item_id, {mapping} AS event_type,
      _event_ts AS event_ts, {"CAST(event_seq AS BIGINT)" if "event_seq" in columns else "_row"} AS event_seq,
      {"CAST(session_id AS VARCHAR)" if "session_id" in columns else "NULL::VARCHAR"} AS session_id
    FROM raw JOIN event_times USING (_row) ORDER BY _row"""


def _items_sql(columns: list[str], source: str, order: str) -> str:
    """One row per item of `source`, the latest non-null value of each item column in `order`."""

    def latest(name: str, cast: str) -> str:
        if name not in columns:
            return f"NULL::{cast}"
        return f'arg_max(CAST("{name}" AS {cast}), {order}) FILTER (WHERE "{name}" IS NOT NULL)'

    available = latest("available", "BOOLEAN")
    return f"""SELECT CAST(item_id AS VARCHAR) AS item_id,
      COALESCE({latest("category", "VARCHAR")}, '{UNKNOWN_CATEGORY}') AS category,
      {latest("brand", "VARCHAR")} AS brand, {latest("price", "DOUBLE")} AS price, {latest("title", "VARCHAR")} AS title,
      COALESCE({available}, TRUE) AS available
    FROM {source} WHERE item_id IS NOT NULL GROUP BY item_id ORDER BY item_id"""


def load_events_file(
    path: str | Path, items_path: str | Path | None = None, event_map: dict[str, str] | None = None
) -> tuple[pa.Table, pa.Table]:
    """(events in schema.EVENTS, items in schema.ITEMS) from a shop's files; LoaderError names what is wrong."""
    path = Path(path)
    raw = read_table(path)
    raw = raw.append_column("_row", pa.array(np.arange(raw.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("raw", raw)
        try:
            events = con.execute(_events_sql(con, raw.column_names, path, event_map or {})).to_arrow_table()
            if items_path is None:
                items = con.execute(_items_sql(raw.column_names, "raw", "_row")).to_arrow_table()
        except duckdb.ConversionException as err:
            raise LoaderError(f"{path}: a column does not convert to its contract type: {err}".splitlines()[0]) from err
    finally:
        con.close()
    if items_path is not None:
        return schema.validate_table(events, schema.EVENTS, "events"), load_items_file(items_path)
    return schema.validate_table(events, schema.EVENTS, "events"), schema.validate_table(items, schema.ITEMS, "items")


def load_items_file(items_path: str | Path) -> pa.Table:
    """A catalogue file (CSV or Parquet: `item_id` and any of category, brand, price, title, available) as
    schema.ITEMS, one row per item with its last value set (file order); beside an events file or a GA4 export."""
    items_raw = read_table(items_path)
    if "item_id" not in items_raw.column_names:
        raise LoaderError(
            f"{items_path}: no item_id column; the items contract is "
            "item_id[,category][,brand][,price][,title][,available]"
        )
    items_raw = items_raw.append_column("_row", pa.array(np.arange(items_raw.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    try:
        con.register("items_raw", items_raw)
        items = con.execute(_items_sql(items_raw.column_names, "items_raw", "_row")).to_arrow_table()
    except duckdb.ConversionException as err:
        raise LoaderError(
            f"{items_path}: a column does not convert to its contract type: {err}".splitlines()[0]
        ) from err
    finally:
        con.close()
    return schema.validate_table(items, schema.ITEMS, "items")
