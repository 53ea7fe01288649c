"""The GA4 queries hold against the schema of Google's public sample, bigquery-public-data.ga4_obfuscated_sample_ecommerce:
every column and every struct field they read exists there with the type they expect (sqlglot, BigQuery dialect)."""

import json
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from components.extract import runner
from components.warehouse import engines, ga4

SAMPLE = "bigquery-public-data.ga4_obfuscated_sample_ecommerce.events_*"
COLUMNS = json.loads((Path(__file__).parent / "ga4_obfuscated_sample_schema.json").read_text())["columns"]
QUERIES = ("ga4_events", "ga4_items", "ga4_drops")


def sample_schema(columns):
    project, dataset, table = SAMPLE.split(".")
    return {project: {dataset: {table: {**columns, "_TABLE_SUFFIX": "STRING"}}}}  # the wildcard's pseudo column


def typed_tree(sql, columns):
    tree = qualify(
        sqlglot.parse_one(sql, read="bigquery"),
        schema=sample_schema(columns),
        dialect="bigquery",
        validate_qualify_columns=True,
    )
    return annotate_types(tree, schema=sample_schema(columns), dialect="bigquery")


def unresolved_fields(tree):
    """Struct field accesses (`it.item_id`, `p.value.int_value`) whose type the schema does not give."""
    return sorted(
        {
            dot.sql("bigquery")
            for dot in tree.find_all(exp.Dot)
            if dot.type is None or dot.type.is_type(exp.DataType.Type.UNKNOWN)
        }
    )


def ga4_query(name):
    """A query as the GA4 branch runs it: the contract queries read the export's derived events and catalogue."""
    source = runner.load_query(name)
    if name in ("events", "event_drops"):
        relations = {"events": runner.load_query("ga4_events"), "items": runner.load_query("ga4_items")}
        source = engines.compose(source, relations)
    return engines.render(source, {"ga4_events": SAMPLE}, "bigquery")


@pytest.mark.parametrize("name", QUERIES + ("events", "event_drops"))
def test_query_reads_only_columns_and_fields_of_the_public_sample(name):
    sql = ga4_query(name)
    assert "`bigquery-public-data`.`ga4_obfuscated_sample_ecommerce`.`events_*`" in sql
    tree = typed_tree(sql, COLUMNS)
    assert unresolved_fields(tree) == []
    fields = {dot.sql("bigquery").split(".", 1)[1] for dot in tree.find_all(exp.Dot)}
    if name == "ga4_events":
        assert {"`it`.`item_id`", "`p`.`value`.`int_value`"} <= fields
        timestamp = next(c for c in tree.find_all(exp.Column) if c.name == "event_timestamp")
        assert timestamp.type.is_type(exp.DataType.Type.BIGINT)  # micros, as TIMESTAMP_MICROS expects


def test_the_check_catches_a_field_or_column_the_sample_lacks():
    items = COLUMNS["items"].replace("item_brand STRING, ", "")
    sql = engines.render(runner.load_query("ga4_items"), {"ga4_events": SAMPLE}, "bigquery")
    assert unresolved_fields(typed_tree(sql, {**COLUMNS, "items": items})) == ["`_0`.`it`.`item_brand`"]
    without_user = {k: v for k, v in COLUMNS.items() if k != "user_pseudo_id"}
    with pytest.raises(sqlglot.errors.OptimizeError, match="user_pseudo_id"):
        typed_tree(engines.render(runner.load_query("ga4_events"), {"ga4_events": SAMPLE}, "bigquery"), without_user)


def test_local_load_types_agree_with_the_sample():
    """The DuckDB types the loader gives each column are the sample's BigQuery types, field by field."""
    import duckdb

    con = duckdb.connect()
    for name, duck in ga4.COLUMNS.items():
        expected = exp.DataType.build(COLUMNS[name], dialect="bigquery").sql("duckdb")
        assert con.execute(
            f"SELECT CAST(NULL AS {duck}) IS NOT DISTINCT FROM CAST(NULL AS {expected}), "
            f"typeof(CAST(NULL AS {duck})) = typeof(CAST(NULL AS {expected}))"
        ).fetchone() == (True, True), name
