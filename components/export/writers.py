"""Writers of the export tables: a local DuckDB file, or BigQuery in production.

Both keep one partition per run date (the UTC date of `generated_at`) and replace only that day's
partition, from the Parquet files the export wrote first:
- DuckDB: the files go into staging tables, then one transaction deletes the day's rows and inserts
  the staged ones in every table; any failure rolls back, so readers see the old rows or the new, whole.
- BigQuery: a load job per table from Parquet into `table$YYYYMMDD` with WRITE_TRUNCATE, on a table
  partitioned by day on `generated_at`. A load job is atomic: the partition is replaced whole or not at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pyarrow as pa

from components import schema
from components.warehouse import bigquery_names
from components.warehouse.duckdb_warehouse import create_table_sql

PARTITION_COLUMN = "generated_at"
TABLE_SCHEMAS = {
    "recommendations": schema.RECOMMENDATIONS,
    "similar_items": schema.SIMILAR_ITEMS,
    "complementary_items": schema.COMPLEMENTARY_ITEMS,
    "audiences": schema.AUDIENCES,
}
_BIGQUERY_TYPES = {
    pa.string(): "STRING",
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.bool_(): "BOOL",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP",
}


def partition_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC day [start, end) of a partition: what a retry of the day's export replaces."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return start, start + dt.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class DuckDBDestination:
    path: Path

    def write(self, files: dict[str, Path], day: dt.date) -> None:
        """Replaces `day`'s rows of every table in `files` (name -> Parquet) in one transaction."""
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(self.path)) as con:
            con.execute("SET TimeZone = 'UTC'")
            for name, file in files.items():
                con.execute(f"CREATE TEMP TABLE staging_{name} AS SELECT * FROM read_parquet(?)", [str(file)])
            con.execute("BEGIN TRANSACTION")
            try:
                for name in files:
                    _replace_partition(con, name, day)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise


def _replace_partition(con, name: str, day: dt.date) -> None:
    start, end = partition_bounds(day)
    con.execute(create_table_sql(name, TABLE_SCHEMAS[name], if_not_exists=True))
    con.execute(f"DELETE FROM {name} WHERE {PARTITION_COLUMN} >= ? AND {PARTITION_COLUMN} < ?", [start, end])
    columns = ", ".join(TABLE_SCHEMAS[name].names)
    con.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM staging_{name}")
    con.execute(
        f"CREATE OR REPLACE VIEW latest_{name} AS SELECT * FROM {name} "
        f"WHERE {PARTITION_COLUMN} = (SELECT max({PARTITION_COLUMN}) FROM {name})"
    )


@dataclasses.dataclass(frozen=True)
class BigQueryDestination:
    project: str
    dataset: str

    def write(self, files: dict[str, str | Path], day: dt.date, client=None) -> None:
        """One load job per table (name -> local Parquet path or gs:// URI), each replacing `day`'s partition."""
        from google.cloud import bigquery

        client = client or bigquery.Client(project=self.project)
        for name, source in files.items():
            client.create_table(self.table(name), exists_ok=True)
            destination = partition_id(self.table_id(name), day)
            config = load_job_config(TABLE_SCHEMAS[name])
            uri = str(source) if str(source).startswith("gs://") else load_source(source)
            if uri:
                job = client.load_table_from_uri(uri, destination, job_config=config)
            else:
                with open(source, "rb") as handle:
                    job = client.load_table_from_file(handle, destination, job_config=config)
            job.result()

    def table_id(self, name: str) -> str:
        """The fully qualified BigQuery id (project.dataset.name) of one output table."""
        return f"{self.project}.{self.dataset}.{name}"

    def table(self, name: str):
        """The table definition: day partitions on generated_at, clustered by the lookup key."""
        from google.cloud import bigquery

        table = bigquery.Table(self.table_id(name), schema=bigquery_schema(TABLE_SCHEMAS[name]))
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN
        )
        table.clustering_fields = [TABLE_SCHEMAS[name].names[0]]
        return table


def load_source(path: str | Path) -> str | None:
    """The gs:// URI behind a Vertex AI GCS FUSE path (/gcs/bucket/...), so BigQuery reads the bucket directly."""
    parts = Path(path).parts
    if len(parts) > 3 and parts[:2] == ("/", "gcs"):
        return "gs://" + "/".join(parts[2:])
    return None


def partition_id(table_id: str, day: dt.date) -> str:
    """The partition decorator `project.dataset.table$YYYYMMDD` that limits a load to one day."""
    return f"{table_id}${day:%Y%m%d}"


def bigquery_schema(table_schema: pa.Schema) -> list:
    """The BigQuery schema of an Arrow schema: the same columns, types and REQUIRED where the contract says non-null."""
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(f.name, _BIGQUERY_TYPES[f.type], mode="NULLABLE" if f.nullable else "REQUIRED")
        for f in table_schema
    ]


def load_job_config(table_schema: pa.Schema):
    """Parquet load that truncates only the decorated partition; the table must already exist."""
    from google.cloud import bigquery

    return bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        schema=bigquery_schema(table_schema),
        time_partitioning=bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN),
    )


def parse_destination(uri: str) -> DuckDBDestination | BigQueryDestination:
    """`duckdb:///abs/path/file.duckdb` or `bigquery://project.dataset`."""
    if uri.startswith("duckdb://"):
        path = uri[len("duckdb://") :]
        if not path:
            raise ValueError(f"destination {uri!r} names no DuckDB file")
        return DuckDBDestination(Path(path))
    if uri.startswith(bigquery_names.URI_PREFIX):
        try:
            return BigQueryDestination(*bigquery_names.parse_dataset_uri(uri))
        except ValueError as err:
            raise ValueError(f"destination {uri!r}: {err}") from None
    raise ValueError(f"unknown destination {uri!r}: expected duckdb:///path/file.duckdb or bigquery://project.dataset")
