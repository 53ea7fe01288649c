"""The extract's queries over the contract tables: the BigQuery Standard SQL in queries/, run on BigQuery or,
transpiled by sqlglot, on DuckDB (the engines: components.warehouse.engines); the stage's entry is stage.run.

Why this shape: the SQL is written once, in the production dialect. Values (window, event types, minimum events)
travel only as query parameters. The output files follow the table contracts in components/schema.py.

Window bounds and the run time are ISO-8601 dates or datetimes (naive means UTC); an empty bound is open, so the
defaults extract everything up to now. Exact duplicate event rows and events after the run time are dropped and
counted by reason (event_drops.sql), like nulls and unknown event types. Event types: a list or a comma-separated string; empty means all of
schema.EVENT_TYPES.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from components import schema
from components.warehouse.engines import Backend, WarehouseError, compose, query_parameters, render

QUERY_DIR = Path(__file__).resolve().parent / "queries"
DROP_QUERIES = {"events": "event_drops", "items": "item_drops", "impressions": "impression_drops"}
MANIFEST = "manifest.json"


class ExtractError(WarehouseError):
    """Bad extract input: a missing table or column, unknown event types, an empty window, ..."""


def load_query(name: str) -> str:
    """The SQL of one named query in queries/ (the dialect-neutral source the engines transpile)."""
    path = QUERY_DIR / f"{name}.sql"
    if not path.is_file():
        raise ExtractError(f"no query {name!r} in {QUERY_DIR}")
    return path.read_text()


def sha256(text: str) -> str:
    """The hex SHA-256 of a query's text, recorded in the manifest so a run names the exact SQL it ran."""
    return hashlib.sha256(text.encode()).hexdigest()


# ---- parameters ---------------------------------------------------------------------------------
def parse_bound(value: str | dt.datetime | None, name: str) -> dt.datetime | None:
    """A window bound as an aware UTC datetime ("" or None: open), refused when it does not parse."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).strip())
        except ValueError as err:
            raise ExtractError(f"{name}={value!r} is not an ISO-8601 date or datetime") from err
    return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else parsed.astimezone(dt.timezone.utc)


def parse_event_types(value: str | Sequence[str] | None) -> list[str]:
    """The event types to extract (comma-separated text or a list; empty: all of schema.EVENT_TYPES), unknown
    refused."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value or [])]
    names = [n for n in names if n]
    if not names:
        return list(schema.EVENT_TYPES)
    unknown = sorted(set(names) - set(schema.EVENT_TYPES))
    if unknown:
        raise ExtractError(f"unknown event type(s) {unknown}; known: {list(schema.EVENT_TYPES)}")
    return list(dict.fromkeys(names))


def relative_window(
    window_days: float, run_time: dt.datetime, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """[end - window_days, end) with end the start of the run time's UTC day: the last whole days before the run,
    so a daily schedule's window moves one day per run and a retry on the same day extracts the same one.
    A fixed bound beside it is refused rather than silently ignored."""
    if start is not None or end is not None:
        raise ExtractError("window_days (a window relative to the run time) excludes window_start and window_end")
    if window_days < 0:
        raise ExtractError(f"window_days must be >= 0 (0: the fixed window), got {window_days}")
    day = run_time.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - dt.timedelta(days=window_days), day


@dataclasses.dataclass(frozen=True)
class ExtractParams:
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    event_types: list[str]
    min_events_per_user: int
    run_time: dt.datetime  # events after it are in the future: dropped and counted

    @classmethod
    def parse(
        cls, window_start, window_end, event_types, min_events_per_user, run_time=None, window_days: float = 0
    ) -> ExtractParams:
        """The extract's parameters from the task's plain values, checked: bounds parsed, a relative window resolved."""
        start, end = parse_bound(window_start, "window_start"), parse_bound(window_end, "window_end")
        now = parse_bound(run_time, "run_time") or dt.datetime.now(dt.timezone.utc)
        if window_days:
            start, end = relative_window(window_days, now, start, end)
        if start is not None and end is not None and start >= end:
            raise ExtractError(
                f"empty window: window_start {start.isoformat()} is not before window_end {end.isoformat()}"
            )
        if (
            isinstance(min_events_per_user, bool)
            or int(min_events_per_user) != min_events_per_user
            or min_events_per_user < 1
        ):
            raise ExtractError(f"min_events_per_user must be an integer >= 1, got {min_events_per_user!r}")
        return cls(start, end, parse_event_types(event_types), int(min_events_per_user), now)

    def values(self) -> dict[str, object]:
        """The named query parameters every extract query may bind (window, event types, propensity floor, ...)."""
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "event_types": self.event_types,
            "known_event_types": list(schema.EVENT_TYPES),
            "min_propensity": schema.MIN_PROPENSITY,
            "min_events_per_user": self.min_events_per_user,
            "run_time": self.run_time,
        }


# ---- running ------------------------------------------------------------------------------------
@dataclasses.dataclass
class QueryRun:
    name: str
    sql: str
    params: dict[str, object]

    @property
    def sha256(self) -> str:
        """The SHA-256 of the SQL that runs, as the manifest records it."""
        return sha256(self.sql)


def prepare(
    name: str,
    backend: Backend,
    params: ExtractParams,
    relations: dict[str, str] | None = None,
    values: dict[str, object] | None = None,
) -> QueryRun:
    """The query `name` for `backend`, with the tables of `relations` (table -> query name) read from those
    queries (compose) and its @parameters bound from params, then `values`."""
    source = load_query(name)
    if relations:
        source = compose(source, {table: load_query(query) for table, query in relations.items()})
    later = later_columns_relations(backend, source)
    if later:
        source = compose(source, later)
    values = {**params.values(), **(values or {})}
    return QueryRun(
        name, render(source, backend.tables, backend.dialect), {p: values[p] for p in query_parameters(source)}
    )


_BIGQUERY_TYPES = {pa.bool_(): "BOOL", pa.int64(): "INT64", pa.float64(): "FLOAT64", pa.string(): "STRING"}


def later_columns_relations(backend: Backend, source: str) -> dict[str, str]:
    """For each table `source` reads that was written before a column of schema.LATER_COLUMNS (an impressions
    table without `muted`), a relation that reads it with that column as NULL (unknown), so the contract queries
    run unchanged on old and new warehouses."""
    read = {t.name for t in sqlglot.parse_one(source, read="bigquery").find_all(exp.Table) if not t.args.get("db")}
    relations = {}
    for table, columns in schema.LATER_COLUMNS.items():
        present = backend.columns(table) if table in read else None
        absent = [c for c in columns if present is not None and c not in present]
        if absent:
            nulls = ", ".join(
                f"CAST(NULL AS {_BIGQUERY_TYPES[schema.TABLES[table].field(c).type]}) AS {c}" for c in absent
            )
            relations[table] = f"SELECT *, {nulls} FROM {table}"
    return relations


def check_columns(backend: Backend, table: str) -> bool:
    """False when the table is absent; raises when it lacks contract columns (those of schema.LATER_COLUMNS may be
    missing: they read as NULL)."""
    present = backend.columns(table)
    if present is None:
        return False
    later = schema.LATER_COLUMNS.get(table, ())
    missing = [c for c in schema.TABLES[table].names if c not in present and c not in later]
    if missing:
        raise ExtractError(
            f"table {backend.tables[table]} lacks column(s) {missing}; contract: {schema.TABLES[table].names}"
        )
    return True


def drop_counts(backend: Backend, run: QueryRun) -> dict[str, int]:
    """The rows a drop query counts per reason (reasons with none left out), sorted for a stable manifest."""
    counts: dict[str, int] = {}
    for batch in backend.batches(run.sql, run.params):
        for reason, n in zip(batch.column("reason").to_pylist(), batch.column("n").to_pylist()):
            if n:
                counts[reason] = counts.get(reason, 0) + int(n)
    return dict(sorted(counts.items()))


def write_parquet(backend: Backend, run: QueryRun, table: str, path: Path) -> tuple[int, int]:
    """Streams a query into a Parquet file validated against the table contract; returns (rows, distinct users)."""
    contract = schema.TABLES[table]
    rows, users, last_user = 0, 0, None
    with pq.ParquetWriter(path, contract) as writer:
        for batch in backend.batches(run.sql, run.params):
            if batch.num_rows == 0:
                continue
            chunk = schema.validate_table(pa.Table.from_batches([batch]), contract, table)
            writer.write_table(chunk)
            rows += chunk.num_rows
            if table == "events":  # rows arrive sorted by user_id: count the changes of user
                ids = chunk.column("user_id").combine_chunks()
                users += pc.sum(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py() or 0
                users += ids[0].as_py() != last_user
                last_user = ids[-1].as_py()
    return rows, users


def extract_into(backend: Backend, params: ExtractParams, out: Path, with_impressions: bool) -> dict:
    """Runs every table's query into Parquet files under `out`; returns the manifest (window, rows, drops, hashes)."""
    tables = ["events", "items"] + (["impressions"] if with_impressions else [])
    runs = {t: prepare(t, backend, params) for t in tables}
    drops = {t: drop_counts(backend, prepare(DROP_QUERIES[t], backend, params)) for t in tables}
    rows: dict[str, int] = {}
    rows["events"], rows["users"] = write_parquet(backend, runs["events"], "events", out / "events.parquet")
    if rows["events"] == 0:
        raise ExtractError(
            f"no events to extract: window [{params.window_start}, {params.window_end}), event types "
            f"{params.event_types}, min_events_per_user {params.min_events_per_user}; dropped {drops['events']}"
        )
    rows["items"], _ = write_parquet(backend, runs["items"], "items", out / "items.parquet")
    if with_impressions:
        rows["impressions"], _ = write_parquet(backend, runs["impressions"], "impressions", out / "impressions.parquet")
    return {
        "window_start": params.window_start.isoformat() if params.window_start else "",
        "window_end": params.window_end.isoformat() if params.window_end else "",
        "event_types": params.event_types,
        "min_events_per_user": params.min_events_per_user,
        "run_time": params.run_time.isoformat(),
        "rows": rows,
        "query_sha256": {run.name: run.sha256 for run in runs.values()},
        "dropped": drops,
    }


def read_manifest(directory: str | Path) -> dict:
    """The manifest.json of an extract output; a folder without one is refused."""
    path = Path(directory, MANIFEST)
    if not path.is_file():
        raise ExtractError(f"{directory}: no {MANIFEST}; is this an extract output?")
    return json.loads(path.read_text())
