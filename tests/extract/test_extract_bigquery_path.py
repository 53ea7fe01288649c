"""The BigQuery path end to end, with a stand-in client that executes the exact BigQuery text and job config
on DuckDB: the production query and its typed parameters must give the same output as the local path."""

import types

import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp

from components.extract import runner
from components.extract import stage as extract_stage
from components.warehouse import duckdb_warehouse, engines


class DuckDBStandInClient:
    """Answers list_tables, get_table and query like google.cloud.bigquery.Client, from a local DuckDB file.

    A local GA4 warehouse (table ga4_events) answers as a dataset of daily tables events_YYYYMMDD, and the
    wildcard table `events_*` of a query reads it."""

    def __init__(self, path):
        self.con = duckdb_warehouse.connect(path)
        self.queries = []

    def list_tables(self, dataset):
        from google.api_core.exceptions import NotFound

        if dataset != "my-project.shop_dw":
            raise NotFound(dataset)
        names = [r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        if "ga4_events" in names:
            names.remove("ga4_events")
            names += [
                f"events_{r[0]}" for r in self.con.execute('SELECT DISTINCT "_TABLE_SUFFIX" FROM ga4_events').fetchall()
            ]
        return [types.SimpleNamespace(table_id=name) for name in names]

    def get_table(self, name):
        from google.api_core.exceptions import NotFound

        table = name.split(".")[-1]
        if table.startswith("events_") and table in {t.table_id for t in self.list_tables("my-project.shop_dw")}:
            table = "ga4_events"
        columns = self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
        if not columns:
            raise NotFound(name)
        return types.SimpleNamespace(schema=[types.SimpleNamespace(name=c[0]) for c in columns])

    def query(self, sql, job_config):
        self.queries.append((sql, job_config))
        tree = sqlglot.parse_one(sql, read="bigquery")
        for table in list(tree.find_all(exp.Table)):
            if table.catalog:
                assert table.catalog == "my-project" and table.db == "shop_dw"
                name = "ga4_events" if table.name == "events_*" else table.name
                table.replace(exp.table_(name, alias=table.alias or None))
        params = {
            p.name: getattr(p, "values", None) if hasattr(p, "array_type") else p.value
            for p in job_config.query_parameters
        }
        reader = self.con.execute(tree.sql(dialect="duckdb"), params).fetch_record_batch(1000)
        return types.SimpleNamespace(result=lambda: types.SimpleNamespace(to_arrow_iterable=lambda: iter(reader)))

    def close(self):
        self.con.close()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    path = tmp_path_factory.mktemp("bq") / "shop.duckdb"
    duckdb_warehouse.build_warehouse("synthetic:tiny", path, seed=5)
    return path


def test_bigquery_path_matches_the_duckdb_path(warehouse, tmp_path):
    client = DuckDBStandInClient(warehouse)
    backend = engines.BigQueryBackend("my-project", "shop_dw", client=client)
    args = ("2025-01-03", "2025-01-10T12:00:00", "view,cart", 2)
    bq = extract_stage.run("bigquery://my-project.shop_dw", tmp_path / "bq", *args, backend=backend)
    local = extract_stage.run(f"duckdb://{warehouse}", tmp_path / "local", *args)
    assert bq["rows"] == local["rows"] and bq["dropped"] == local["dropped"]
    assert bq["rows"]["events"] > 0 and bq["dialect"] == "bigquery"
    for name in ("events", "items", "impressions"):
        assert pq.read_table(tmp_path / "bq" / f"{name}.parquet").equals(
            pq.read_table(tmp_path / "local" / f"{name}.parquet")
        )
    assert bq["query_sha256"] != local["query_sha256"]  # the dialects differ, the meaning does not
    for sql, config in client.queries:
        assert "`my-project`.`shop_dw`." in sql and "2025" not in sql
        assert {p.name for p in config.query_parameters} == set(engines.query_parameters(sql))
    client.close()


def test_missing_bigquery_table_is_named(tmp_path):
    import duckdb

    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    backend = engines.BigQueryBackend("my-project", "shop_dw", client=DuckDBStandInClient(empty))
    with pytest.raises(runner.ExtractError, match="no table my-project.shop_dw.events"):
        extract_stage.run("bigquery://my-project.shop_dw", tmp_path / "out", backend=backend)


def test_ga4_bigquery_path_reads_the_wildcard_table_and_matches_the_duckdb_path(tmp_path):
    from pathlib import Path

    warehouse = tmp_path / "ga4.duckdb"
    duckdb_warehouse.build_warehouse(f"ga4:{Path(__file__).parent / 'ga4_export'}", warehouse)
    client = DuckDBStandInClient(warehouse)
    backend = engines.BigQueryBackend("my-project", "shop_dw", client=client)
    args = ("2024-03-01T12:00:00", "2024-03-03", "", 1)
    bq = extract_stage.run(
        "bigquery://my-project.shop_dw?user_key=user_pseudo_id", tmp_path / "bq", *args, backend=backend
    )
    local = extract_stage.run(f"duckdb://{warehouse}?user_key=user_pseudo_id", tmp_path / "local", *args)
    assert bq["rows"] == local["rows"] and bq["dropped"] == local["dropped"] and bq["rows"]["events"] > 0
    assert bq["ga4"]["table"] == "my-project.shop_dw.events_*"
    for name in ("events", "items"):
        assert pq.read_table(tmp_path / "bq" / f"{name}.parquet").equals(
            pq.read_table(tmp_path / "local" / f"{name}.parquet")
        )
    for sql, config in client.queries:
        assert "`my-project`.`shop_dw`.`events_*`" in sql and "_TABLE_SUFFIX" in sql and "2024" not in sql
        assert {p.name for p in config.query_parameters} == set(engines.query_parameters(sql))
    client.close()
