"""The SQL engines the stages query a warehouse through: BigQuery, or a local DuckDB file with the same tables.

Why here and not in a stage: extract reads the contract tables through them and experiments' A/B analysis and
off-policy evaluation read the impressions and the export's outcomes, so they sit with the warehouse, which every
stage may import. Queries are written once in BigQuery Standard SQL and transpiled by sqlglot for DuckDB; values
travel only as query parameters, and table names (which cannot be parameters) are validated against a strict
identifier pattern and put into the parsed query as identifiers, never spliced into text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs

import pyarrow as pa
import sqlglot
from sqlglot import exp

from components.warehouse.ga4 import USER_KEYS

WAREHOUSE_TABLES = ("events", "items", "impressions")
BATCH_ROWS = 200_000

# A BigQuery table path: [project.]dataset.table, or a bare table name (DuckDB). Project ids are lower case with
# dashes; dataset and table names here are restricted to letters, digits and underscores.
_PROJECT = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_DATASET = r"[A-Za-z0-9_]{1,1024}"  # BigQuery's rule, as components.warehouse.bigquery_names checks it
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,1023}"
TABLE_NAME = re.compile(rf"(?:(?:{_PROJECT})\.)?(?:{_DATASET}\.)?{_NAME}\*?")  # `events_*`: a wildcard table (GA4)


class WarehouseError(ValueError):
    """A warehouse that cannot be queried as asked: a bad URI or table name, a failed query, a bad parameter."""


def validate_table_name(name: str) -> str:
    """`name` if it is [project.]dataset.table or a bare table; else a WarehouseError (it goes into SQL as an
    identifier, so nothing else may pass)."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):  # never match(): `$` passes a "\n"
        raise WarehouseError(
            f"invalid table name {name!r}: expected [project.]dataset.table or table, "
            "letters, digits and underscores (dashes in the project id)"
        )
    return name


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


def compose(sql: str, relations: dict[str, str]) -> str:
    """`sql` (BigQuery) with each table that `relations` names read from that query instead (a subquery under the
    table's alias): how the GA4 extract runs the contract queries over the export's derived events and catalogue."""
    tree = sqlglot.parse_one(sql, read="bigquery")
    for table in list(tree.find_all(exp.Table)):
        if not table.args.get("db") and table.name in relations:
            relation = sqlglot.parse_one(relations[table.name], read="bigquery")
            relation.set("order", None)  # a table has no order; the outer query sorts
            table.replace(relation.subquery(table.alias_or_name))
    return tree.sql(dialect="bigquery")


def split_uri(warehouse_uri: str) -> tuple[str, str | None]:
    """(the URI without its query, the `user_key` option or None); any other option is an error."""
    base, sep, query = warehouse_uri.partition("?")
    if not sep:
        return warehouse_uri, None
    options = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(options) - {"user_key"})
    if unknown or len(options.get("user_key", [])) != 1:
        raise WarehouseError(
            f"{warehouse_uri!r}: the only URI option is user_key=user_id|user_pseudo_id "
            f"(once), for GA4 exports; got {sorted(options) or query!r}"
        )
    (user_key,) = options["user_key"]
    if user_key not in USER_KEYS:
        raise WarehouseError(f"user_key={user_key!r}: expected one of {list(USER_KEYS)}")
    return base, user_key


class Backend(Protocol):
    dialect: str
    tables: dict[str, str]

    def columns(self, table: str) -> set[str] | None:
        """The columns of `table` in the warehouse, or None when there is no such table."""
        ...

    def batches(self, sql: str, params: dict[str, object]) -> Iterator[pa.RecordBatch]:
        """The result of `sql` with its named parameters bound, as Arrow record batches."""
        ...

    def close(self) -> None:
        """Releases the connection or client."""
        ...


class DuckDBBackend:
    """A local DuckDB warehouse file, opened read-only; queries run transpiled to DuckDB's dialect."""

    dialect = "duckdb"

    def __init__(self, path: str | Path):
        from components.warehouse.duckdb_warehouse import connect

        self.path = Path(path)
        self.con = connect(self.path)
        self.tables = {name: name for name in (*WAREHOUSE_TABLES, "ga4_events")}

    def columns(self, table: str) -> set[str] | None:
        """The columns of `table` in the file's main schema, or None when there is no such table."""
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'", [table]
        ).fetchall()
        return {row[0] for row in rows} or None

    def batches(self, sql: str, params: dict[str, object]) -> Iterator[pa.RecordBatch]:
        """The result of `sql` as record batches of BATCH_ROWS rows; a DuckDB error names the query."""
        import duckdb

        try:
            reader = self.con.execute(sql, params).fetch_record_batch(BATCH_ROWS)
            yield from reader
        except duckdb.Error as err:
            raise WarehouseError(f"DuckDB query failed on {self.path}: {err}") from err

    def derive(self, name: str, sql: str, params: dict[str, object]) -> str:
        """Keeps a query's rows as a temporary table for this connection (a read-only file allows them) and returns
        its name, so that several queries read one derivation instead of each deriving it again."""
        import duckdb

        table = validate_table_name(f"derived_{name}")
        try:
            self.con.execute(f'CREATE OR REPLACE TEMP TABLE "{table}" AS {sql}', params)
        except duckdb.Error as err:
            raise WarehouseError(f"DuckDB query failed on {self.path}: {err}") from err
        return table

    def close(self) -> None:
        """Closes the read-only connection."""
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
        """The columns of `table` (ga4_events: its newest daily table), or None when there is no such table."""
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
        """The result of `sql` with typed query parameters, as Arrow batches; an API error names the query."""
        from google.api_core.exceptions import GoogleAPIError

        try:
            rows = self.client.query(sql, job_config=bigquery_job_config(params)).result()
            yield from rows.to_arrow_iterable()
        except GoogleAPIError as err:
            raise WarehouseError(f"BigQuery query failed on {self.project}.{self.dataset}: {err}") from err

    def close(self) -> None:
        """Closes the BigQuery client."""
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
            raise WarehouseError(f"parameter {name!r} has unsupported type {type(value).__name__}")
    return bigquery.QueryJobConfig(query_parameters=query_parameters)


@dataclasses.dataclass(frozen=True)
class WarehouseURI:
    """A parsed warehouse URI: `duckdb:///path` or `bigquery://project.dataset`, with the GA4 `?user_key=` option."""

    scheme: str  # "duckdb" or "bigquery"
    path: Path | None = None
    project: str = ""
    dataset: str = ""
    user_key: str | None = None


def parse_warehouse_uri(warehouse_uri: str) -> WarehouseURI:
    """The one parser of warehouse URIs: open_backend reads them with it, and pipelines.run checks a remote run's
    before submitting it. BigQuery names follow BigQuery's rules (components.warehouse.bigquery_names)."""
    from components.warehouse import bigquery_names

    base, user_key = split_uri(warehouse_uri)
    if base.startswith("duckdb://"):
        from components.warehouse.duckdb_warehouse import duckdb_path

        try:
            return WarehouseURI("duckdb", path=duckdb_path(base), user_key=user_key)
        except ValueError as err:
            raise WarehouseError(str(err)) from None
    if base.startswith(bigquery_names.URI_PREFIX):
        try:
            project, dataset = bigquery_names.parse_dataset_uri(base)
        except ValueError as err:
            raise WarehouseError(f"warehouse {base!r}: {err}") from None
        return WarehouseURI("bigquery", project=project, dataset=dataset, user_key=user_key)
    raise WarehouseError(
        f"unsupported warehouse URI {warehouse_uri!r}: expected duckdb:///path or bigquery://project.dataset"
    )


def open_backend(warehouse_uri: str) -> Backend:
    """The backend of a warehouse URI; its `?user_key=` option (GA4) is read by the extract stage, not here."""
    uri = parse_warehouse_uri(warehouse_uri)
    if uri.scheme == "duckdb":
        if not uri.path.is_file():
            raise WarehouseError(f"no DuckDB warehouse at {uri.path} (from {warehouse_uri!r})")
        return DuckDBBackend(uri.path)
    return BigQueryBackend(uri.project, uri.dataset)
