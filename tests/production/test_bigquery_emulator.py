"""Extract's BigQuery path, real google-cloud-bigquery client, against bqemulator running in-process.

bqemulator (DuckDB + SQLGlot behind BigQuery's REST API) runs offline once DuckDB's spatial
extension comes from the `duckdb-extension-spatial` wheel instead of a download. It comes from the
test lock (requirements-test.lock), never the image.
"""

import duckdb
import pyarrow.parquet as pq
import pytest

pytest.importorskip("bqemulator", reason="bqemulator comes from requirements-test.lock")

from google.cloud import bigquery

from components import schema
from components.export.writers import bigquery_schema
from components.extract.stage import run as run_extract
from components.warehouse.duckdb_warehouse import build_warehouse
from components.warehouse.engines import BigQueryBackend

WAREHOUSE_TABLES = {"events": schema.EVENTS, "items": schema.ITEMS, "impressions": schema.IMPRESSIONS}


@pytest.fixture(scope="session", autouse=True)
def offline_spatial_extension():
    """bqemulator runs INSTALL spatial at start; installing it from the pinned wheel first keeps that offline."""
    import duckdb_extensions

    duckdb_extensions.import_extension("spatial")


class CommentlessQueries:
    """The client, except that each query's SQL comments are dropped before it is sent.

    bqemulator 1.4.0 counts `@name` parameters written inside `--` comments and then fails with a
    parameter-count mismatch; real BigQuery ignores comments. Dropping them at the client boundary works
    around the emulator, not our SQL: the statement itself reaches the emulator unchanged.
    """

    def __init__(self, client):
        self._client = client

    def query(self, sql, *args, **kwargs):
        import sqlglot

        return self._client.query(
            sqlglot.transpile(sql, read="bigquery", write="bigquery", comments=False)[0], *args, **kwargs
        )

    def __getattr__(self, name):
        return getattr(self._client, name)


def load_into_emulator(client, warehouse, dataset: str) -> dict[str, int]:
    """Copies the DuckDB warehouse tables into a BigQuery dataset with Parquet load jobs."""
    client.create_dataset(dataset, exists_ok=True)
    counts = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        present = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for name, table_schema in WAREHOUSE_TABLES.items():
            if name not in present:
                continue
            table_id = f"{client.project}.{dataset}.{name}"
            client.create_table(bigquery.Table(table_id, schema=bigquery_schema(table_schema)))
            parquet = warehouse.with_name(f"{name}.parquet")
            pq.write_table(con.execute(f"SELECT * FROM {name}").fetch_arrow_table(), parquet)
            with open(parquet, "rb") as handle:
                config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET)
                counts[name] = client.load_table_from_file(handle, table_id, job_config=config).result().output_rows
    return counts


def test_bigquery_extract_matches_duckdb_extract(bqemu_client, tmp_path):
    warehouse = tmp_path / "shop.duckdb"
    build_warehouse("synthetic:tiny", warehouse, seed=0)
    loaded = load_into_emulator(bqemu_client, warehouse, "shop")
    assert loaded["events"] > 0 and loaded["items"] > 0

    backend = BigQueryBackend(bqemu_client.project, "shop", client=CommentlessQueries(bqemu_client))
    from_bigquery = run_extract(
        f"bigquery://{bqemu_client.project}.shop", tmp_path / "bq", backend=backend, min_events_per_user=3
    )
    from_duckdb = run_extract(f"duckdb://{warehouse}", tmp_path / "duckdb", min_events_per_user=3)

    assert from_bigquery["dialect"] == "bigquery"
    assert from_bigquery["rows"] == from_duckdb["rows"]
    assert from_bigquery["dropped"] == from_duckdb["dropped"]
    for table in ("events.parquet", "items.parquet"):
        assert (
            pq.read_table(tmp_path / "bq" / table).to_pylist() == pq.read_table(tmp_path / "duckdb" / table).to_pylist()
        )


def test_ga4_export_extracts_the_same_through_the_emulator(bqemu_client, tmp_path):
    """GA4 daily tables with their nested schema, loaded from the hand-written export with NDJSON load jobs, go
    through the wildcard table, _TABLE_SUFFIX and UNNEST on the emulator as on the local DuckDB load."""
    import json
    from pathlib import Path

    export = Path(__file__).parents[1] / "extract" / "ga4_export"
    columns = json.loads((export.parent / "ga4_obfuscated_sample_schema.json").read_text())["columns"]
    fields = [bigquery.SchemaField.from_api_repr(f) for f in _ga4_api_schema(columns)]
    bqemu_client.create_dataset("analytics_123456", exists_ok=True)
    for path in sorted(export.glob("events_*.json")):
        table_id = f"{bqemu_client.project}.analytics_123456.{path.stem}"
        bqemu_client.create_table(bigquery.Table(table_id, schema=fields))
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON, schema=fields, ignore_unknown_values=True
        )
        with open(path, "rb") as handle:
            bqemu_client.load_table_from_file(handle, table_id, job_config=config).result()

    warehouse = tmp_path / "ga4.duckdb"
    build_warehouse(f"ga4:{export}", warehouse)
    backend = BigQueryBackend(bqemu_client.project, "analytics_123456", client=CommentlessQueries(bqemu_client))
    args = dict(window_start="2024-03-01T12:00:00", window_end="2024-03-03")
    from_bigquery = run_extract(
        f"bigquery://{bqemu_client.project}.analytics_123456", tmp_path / "bq", backend=backend, **args
    )
    from_duckdb = run_extract(f"duckdb://{warehouse}", tmp_path / "duckdb", **args)
    assert from_bigquery["rows"] == from_duckdb["rows"] and from_bigquery["rows"]["events"] > 0
    assert from_bigquery["dropped"] == from_duckdb["dropped"]
    for table in ("events.parquet", "items.parquet"):
        assert (
            pq.read_table(tmp_path / "bq" / table).to_pylist() == pq.read_table(tmp_path / "duckdb" / table).to_pylist()
        )

    # The shop's catalogue beside the export: a table `items` in the dataset, as SOURCE=ga4:<folder>,items:<file>
    from components.warehouse.events_file import load_items_file

    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("item_id,category,price,available\nGGOEGAAX0104,Bikes,45.0,false\nGGOEGDHC018299,Tops,,\n")
    table_id = f"{bqemu_client.project}.analytics_123456.items"
    bqemu_client.create_table(bigquery.Table(table_id, schema=bigquery_schema(schema.ITEMS)))
    pq.write_table(load_items_file(catalogue), tmp_path / "items.parquet")
    with open(tmp_path / "items.parquet", "rb") as handle:
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET)
        bqemu_client.load_table_from_file(handle, table_id, job_config=config).result()
    build_warehouse(f"ga4:{export},items:{catalogue}", tmp_path / "ga4-catalogue.duckdb")
    from_bigquery = run_extract(
        f"bigquery://{bqemu_client.project}.analytics_123456", tmp_path / "bq-catalogue", backend=backend, **args
    )
    from_duckdb = run_extract(f"duckdb://{tmp_path / 'ga4-catalogue.duckdb'}", tmp_path / "duckdb-catalogue", **args)
    assert from_bigquery["ga4"]["catalogue"].endswith("analytics_123456.items")
    assert from_bigquery["rows"] == from_duckdb["rows"] and from_bigquery["rows"]["items"] == 2
    assert from_bigquery["dropped"] == from_duckdb["dropped"] and from_bigquery["dropped"]["events"]["unknown_item"] > 0
    for table in ("events.parquet", "items.parquet"):
        assert (
            pq.read_table(tmp_path / "bq-catalogue" / table).to_pylist()
            == pq.read_table(tmp_path / "duckdb-catalogue" / table).to_pylist()
        )


def _ga4_api_schema(columns: dict[str, str]) -> list[dict]:
    """BigQuery API schema fields from the fixture's Standard SQL types (ARRAY<STRUCT<...>> is a REPEATED RECORD)."""
    from sqlglot import exp

    def field(name: str, kind: exp.DataType) -> dict:
        mode = "NULLABLE"
        if kind.is_type(exp.DataType.Type.ARRAY):
            mode, kind = "REPEATED", kind.expressions[0]
        if kind.is_type(exp.DataType.Type.STRUCT):
            return {
                "name": name,
                "type": "RECORD",
                "mode": mode,
                "fields": [field(c.name, c.args["kind"]) for c in kind.expressions],
            }
        return {"name": name, "type": kind.sql("bigquery").replace("FLOAT64", "FLOAT"), "mode": mode}

    return [field(name, exp.DataType.build(text, dialect="bigquery")) for name, text in columns.items()]
