"""The extract stage: runs the BigQuery Standard SQL in queries/ on BigQuery or, transpiled by sqlglot, on DuckDB.

Why this shape: the SQL is written once, in the production dialect. Values (window, event types, minimum events)
travel only as query parameters; table names cannot be parameters, so they are validated against a strict
identifier pattern and put into the parsed query as table identifiers, never spliced into text.

Output directory (schema: contracts.md): events.parquet (sorted by user_id, event_ts, event_seq), items.parquet,
impressions.parquet when the warehouse has that table, and manifest.json. It is written through
atomic.staged_directory (manifest.json last), so a failed run leaves nothing that looks complete.

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
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from components import atomic, schema

QUERY_DIR = Path(__file__).resolve().parent / "queries"
WAREHOUSE_TABLES = ("events", "items", "impressions")
DROP_QUERIES = {"events": "event_drops", "items": "item_drops", "impressions": "impression_drops"}
MANIFEST = "manifest.json"
BATCH_ROWS = 200_000

# A BigQuery table path: [project.]dataset.table, or a bare table name (DuckDB). Project ids are lower case with
# dashes; dataset and table names here are restricted to letters, digits and underscores.
_PROJECT = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,1023}"
TABLE_NAME = re.compile(rf"(?:(?:{_PROJECT})\.)?(?:{_NAME}\.)?{_NAME}\*?")  # `events_*`: a wildcard table (GA4)


class ExtractError(ValueError):
    """Bad extract input: a missing table or column, unknown event types, an empty window, ..."""


def validate_table_name(name: str) -> str:
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):  # never match(): `$` passes a "\n"
        raise ExtractError(
            f"invalid table name {name!r}: expected [project.]dataset.table or table, "
            "letters, digits and underscores (dashes in the project id)"
        )
    return name


def load_query(name: str) -> str:
    path = QUERY_DIR / f"{name}.sql"
    if not path.is_file():
        raise ExtractError(f"no query {name!r} in {QUERY_DIR}")
    return path.read_text()


def query_parameters(sql: str) -> list[str]:
    """Names of the @parameters a BigQuery query uses, in first-use order."""
    names: list[str] = []
    for node in sqlglot.parse_one(sql, read="bigquery").find_all(exp.Parameter):
        name = node.name
        if name not in names:
            names.append(name)
    return names


def render(sql: str, tables: dict[str, str], dialect: str) -> str:
    """The query in `dialect` ('bigquery' or 'duckdb'), with the warehouse tables replaced by validated names.

    Comments are dropped: the file's header names the @parameters, and an engine that counts
    parameters in the text (the BigQuery emulator does) would see them twice.
    """
    tree = sqlglot.parse_one(sql, read="bigquery")
    for table in list(tree.find_all(exp.Table)):
        if not table.args.get("db") and table.name in tables:
            parts = validate_table_name(tables[table.name]).split(".")
            replacement = exp.table_(
                parts[-1], db=(parts[-2:-1] or [None])[0], catalog=(parts[-3:-2] or [None])[0], quoted=True
            )
            if table.alias:
                replacement.set("alias", table.args["alias"])
            table.replace(replacement)
    return tree.sql(dialect=dialect, pretty=True, comments=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- parameters ---------------------------------------------------------------------------------
def parse_bound(value: str | dt.datetime | None, name: str) -> dt.datetime | None:
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
    ) -> "ExtractParams":
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
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "event_types": self.event_types,
            "known_event_types": list(schema.EVENT_TYPES),
            "min_propensity": schema.MIN_PROPENSITY,
            "min_events_per_user": self.min_events_per_user,
            "run_time": self.run_time,
        }


# ---- backends -----------------------------------------------------------------------------------
class Backend(Protocol):
    dialect: str
    tables: dict[str, str]

    def columns(self, table: str) -> set[str] | None: ...

    def batches(self, sql: str, params: dict[str, object]) -> Iterator[pa.RecordBatch]: ...


class DuckDBBackend:
    """A local DuckDB warehouse file, opened read-only; queries run transpiled to DuckDB's dialect."""

    dialect = "duckdb"

    def __init__(self, path: str | Path):
        from components.warehouse.duckdb_warehouse import connect

        self.path = Path(path)
        self.con = connect(self.path)
        self.tables = {name: name for name in (*WAREHOUSE_TABLES, "ga4_events")}

    def columns(self, table: str) -> set[str] | None:
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'", [table]
        ).fetchall()
        return {row[0] for row in rows} or None

    def batches(self, sql: str, params: dict[str, object]) -> Iterator[pa.RecordBatch]:
        import duckdb

        try:
            reader = self.con.execute(sql, params).fetch_record_batch(BATCH_ROWS)
            yield from reader
        except duckdb.Error as err:
            raise ExtractError(f"DuckDB query failed on {self.path}: {err}") from err

    def close(self) -> None:
        self.con.close()


class BigQueryBackend:
    """A BigQuery dataset (`bigquery://project.dataset`); parameters travel as typed query parameters."""

    dialect = "bigquery"

    def __init__(self, project: str, dataset: str, client=None, location: str | None = None):
        from google.cloud import bigquery

        self.project, self.dataset = project, dataset
        self.tables = {name: validate_table_name(f"{project}.{dataset}.{name}") for name in WAREHOUSE_TABLES}
        self.tables["ga4_events"] = f"{project}.{dataset}.events_*"  # GA4's daily tables
        self.client = client or bigquery.Client(project=project, location=location)

    def columns(self, table: str) -> set[str] | None:
        from google.api_core.exceptions import NotFound

        try:
            if table == "ga4_events":  # a wildcard table has the schema of its newest daily table
                daily = sorted(
                    t.table_id
                    for t in self.client.list_tables(f"{self.project}.{self.dataset}")
                    if re.fullmatch(r"events_\d{8}", t.table_id)
                )
                if not daily:
                    return None
                return {
                    field.name for field in self.client.get_table(f"{self.project}.{self.dataset}.{daily[-1]}").schema
                }
            return {field.name for field in self.client.get_table(self.tables[table]).schema}
        except NotFound:
            return None

    def batches(self, sql: str, params: dict[str, object]) -> Iterator[pa.RecordBatch]:
        from google.api_core.exceptions import GoogleAPIError

        try:
            rows = self.client.query(sql, job_config=bigquery_job_config(params)).result()
            yield from rows.to_arrow_iterable()
        except GoogleAPIError as err:
            raise ExtractError(f"BigQuery query failed on {self.project}.{self.dataset}: {err}") from err

    def close(self) -> None:
        self.client.close()


def bigquery_job_config(params: dict[str, object]):
    """A QueryJobConfig with one typed parameter per value: TIMESTAMP (None = NULL), ARRAY<STRING>, INT64, FLOAT64,
    STRING."""
    from google.cloud import bigquery

    query_parameters = []
    for name, value in params.items():
        if value is None or isinstance(value, dt.datetime):
            query_parameters.append(bigquery.ScalarQueryParameter(name, "TIMESTAMP", value))
        elif isinstance(value, list):
            query_parameters.append(bigquery.ArrayQueryParameter(name, "STRING", value))
        elif isinstance(value, int) and not isinstance(value, bool):
            query_parameters.append(bigquery.ScalarQueryParameter(name, "INT64", value))
        elif isinstance(value, float):
            query_parameters.append(bigquery.ScalarQueryParameter(name, "FLOAT64", value))
        elif isinstance(value, str):
            query_parameters.append(bigquery.ScalarQueryParameter(name, "STRING", value))
        else:
            raise ExtractError(f"parameter {name!r} has unsupported type {type(value).__name__}")
    return bigquery.QueryJobConfig(query_parameters=query_parameters)


def open_backend(warehouse_uri: str) -> Backend:
    """The backend of a warehouse URI; its `?user_key=` option (GA4) is read by run_extract, not here."""
    from components.extract import ga4

    warehouse_uri, _ = ga4.split_uri(warehouse_uri)
    if warehouse_uri.startswith("duckdb://"):
        from components.warehouse.duckdb_warehouse import duckdb_path

        path = duckdb_path(warehouse_uri)
        if not path.is_file():
            raise ExtractError(f"no DuckDB warehouse at {path} (from {warehouse_uri!r})")
        return DuckDBBackend(path)
    if warehouse_uri.startswith("bigquery://"):
        project, sep, dataset = warehouse_uri[len("bigquery://") :].partition(".")
        if not sep:
            raise ExtractError(f"{warehouse_uri!r}: expected bigquery://project.dataset")
        validate_table_name(f"{project}.{dataset}.events")
        return BigQueryBackend(project, dataset)
    raise ExtractError(
        f"unsupported warehouse URI {warehouse_uri!r}: expected duckdb:///path or bigquery://project.dataset"
    )


# ---- running ------------------------------------------------------------------------------------
@dataclasses.dataclass
class QueryRun:
    name: str
    sql: str
    params: dict[str, object]

    @property
    def sha256(self) -> str:
        return sha256(self.sql)


def prepare(name: str, backend: Backend, params: ExtractParams) -> QueryRun:
    source = load_query(name)
    values = params.values()
    return QueryRun(
        name, render(source, backend.tables, backend.dialect), {p: values[p] for p in query_parameters(source)}
    )


def check_columns(backend: Backend, table: str) -> bool:
    """False when the table is absent; raises when it lacks contract columns."""
    present = backend.columns(table)
    if present is None:
        return False
    missing = [c for c in schema.TABLES[table].names if c not in present]
    if missing:
        raise ExtractError(
            f"table {backend.tables[table]} lacks column(s) {missing}; contract: {schema.TABLES[table].names}"
        )
    return True


def drop_counts(backend: Backend, run: QueryRun) -> dict[str, int]:
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


def run_extract(
    warehouse_uri: str,
    output_dir: str | Path,
    window_start: str | dt.datetime | None = "",
    window_end: str | dt.datetime | None = "",
    event_types: str | Sequence[str] = "",
    min_events_per_user: int = 1,
    backend: Backend | None = None,
    run_time: str | dt.datetime | None = "",
    window_days: float = 0,
) -> dict:
    """Extracts events, items (and impressions) of a warehouse into output_dir; returns the manifest.

    window_days > 0 replaces the fixed window by the last window_days whole UTC days before run_time's day
    (relative_window).

    A warehouse of GA4 export tables instead of contract tables goes through components.extract.ga4.
    run_time ("" = now) is the run's own time: an event after it cannot have happened yet and is dropped as
    `future_event`, whatever the window says."""
    from components.extract import ga4

    params = ExtractParams.parse(window_start, window_end, event_types, min_events_per_user, run_time, window_days)
    _, user_key = ga4.split_uri(warehouse_uri)
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExtractError(f"output {output_dir} exists and is not an empty directory")
    owned = backend is None
    backend = backend or open_backend(warehouse_uri)
    try:
        if ga4.is_ga4(backend):
            extract = lambda staging: ga4.extract_into(backend, params, staging, user_key)  # noqa: E731
        elif user_key is not None:
            raise ExtractError(
                f"{warehouse_uri!r}: user_key applies to GA4 exports only, and this warehouse has "
                f"a contract events table"
            )
        else:
            for table in ("events", "items"):
                if not check_columns(backend, table):
                    raise ExtractError(
                        f"warehouse {warehouse_uri} has no table {backend.tables[table]} "
                        "(nor GA4 export tables events_*)"
                    )
            with_impressions = check_columns(backend, "impressions")
            extract = lambda staging: extract_into(backend, params, staging, with_impressions)  # noqa: E731
        with atomic.staged_directory(output_dir, last=MANIFEST) as staging:
            manifest = extract(staging)
            manifest = {"source": warehouse_uri, "dialect": backend.dialect, **manifest}
            atomic.write_json(staging / MANIFEST, manifest)
        return manifest
    finally:
        if owned:
            backend.close()


def extract_into(backend: Backend, params: ExtractParams, out: Path, with_impressions: bool) -> dict:
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
    path = Path(directory, MANIFEST)
    if not path.is_file():
        raise ExtractError(f"{directory}: no {MANIFEST}; is this an extract output?")
    return json.loads(path.read_text())
