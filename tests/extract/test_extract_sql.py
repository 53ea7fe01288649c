"""The extract SQL: BigQuery text, its DuckDB transpilation, parameters and table-name validation."""

import datetime as dt

import pytest
import sqlglot
from sqlglot import exp

from components.extract import runner
from components.warehouse import engines

QUERIES = ["events", "event_drops", "items", "item_drops", "impressions", "impression_drops"]
BQ_TABLES = {name: f"my-project.shop_dw.{name}" for name in engines.WAREHOUSE_TABLES}


@pytest.mark.parametrize("name", QUERIES)
def test_bigquery_text_round_trips_through_the_bigquery_dialect(name):
    rendered = engines.render(runner.load_query(name), BQ_TABLES, "bigquery")
    again = sqlglot.parse_one(rendered, read="bigquery").sql(dialect="bigquery", pretty=True)
    assert again == rendered
    tables = {
        ".".join(f"`{part.name}`" for part in t.parts)
        for t in sqlglot.parse_one(rendered, read="bigquery").find_all(exp.Table)
        if t.catalog
    }
    assert "`my-project`.`shop_dw`.`items`" in tables
    assert tables <= {f"`my-project`.`shop_dw`.`{t}`" for t in engines.WAREHOUSE_TABLES}


@pytest.mark.parametrize("name", QUERIES)
def test_duckdb_transpilation_parses_and_keeps_the_parameters(name):
    source = runner.load_query(name)
    duck = engines.render(source, {t: t for t in engines.WAREHOUSE_TABLES}, "duckdb")
    tree = sqlglot.parse_one(duck, read="duckdb")
    placeholders = {node.name for node in tree.find_all(exp.Placeholder)}
    assert placeholders == set(engines.query_parameters(source))
    assert not list(tree.find_all(exp.Parameter))


def test_the_queries_that_join_the_catalogue_define_it_alike():
    """Each query file stays runnable on its own in BigQuery, so the catalogue CTE is written in four of them;
    this keeps the copies, and items.sql's filter, from drifting apart."""

    def catalogue(name):
        ctes = sqlglot.parse_one(runner.load_query(name), read="bigquery").find_all(exp.CTE)
        return next(cte.this for cte in ctes if cte.alias == "catalogue")

    joining = ("events", "event_drops", "impressions", "impression_drops")
    copies = {name: catalogue(name).sql("bigquery") for name in joining}
    assert len(set(copies.values())) == 1, copies
    items_filter = sqlglot.parse_one(runner.load_query("items"), read="bigquery").args["where"]
    assert catalogue("events").args["where"].sql("bigquery") == items_filter.sql("bigquery")


def test_parameters_are_never_in_the_query_text(tmp_path):
    class Recorder:
        dialect = "bigquery"
        tables = BQ_TABLES

    params = runner.ExtractParams.parse("2031-07-04", "2031-08-09T10:11:12", "view,purchase", 7, "2031-09-01")
    run = runner.prepare("events", Recorder(), params)
    assert "2031" not in run.sql and "'view'" not in run.sql and " 7" not in run.sql
    assert run.params == {
        "window_start": dt.datetime(2031, 7, 4, tzinfo=dt.timezone.utc),
        "window_end": dt.datetime(2031, 8, 9, 10, 11, 12, tzinfo=dt.timezone.utc),
        "run_time": dt.datetime(2031, 9, 1, tzinfo=dt.timezone.utc),
        "event_types": ["view", "purchase"],
        "min_events_per_user": 7,
    }
    other = runner.prepare("events", Recorder(), runner.ExtractParams.parse("", "", "", 1))
    assert other.sha256 == run.sha256


def test_bigquery_job_config_carries_typed_parameters():
    from google.cloud import bigquery

    params = runner.ExtractParams.parse("2024-01-01", "", "cart", 3).values()
    config = engines.bigquery_job_config(params)
    by_name = {p.name: p for p in config.query_parameters}
    assert isinstance(by_name["window_start"], bigquery.ScalarQueryParameter)
    assert by_name["window_start"].type_ == "TIMESTAMP"
    assert by_name["window_end"].type_ == "TIMESTAMP" and by_name["window_end"].value is None
    assert isinstance(by_name["event_types"], bigquery.ArrayQueryParameter)
    assert by_name["event_types"].array_type == "STRING" and by_name["event_types"].values == ["cart"]
    assert by_name["min_events_per_user"].type_ == "INT64" and by_name["min_events_per_user"].value == 3
    api = config.to_api_repr()["query"]["queryParameters"]
    assert {p["name"] for p in api} == set(params)


def test_bigquery_job_config_types_floats_and_refuses_the_rest():
    config = engines.bigquery_job_config({"treatment_ratio": 0.25})
    assert config.query_parameters[0].type_ == "FLOAT64" and config.query_parameters[0].value == 0.25
    with pytest.raises(engines.WarehouseError, match="unsupported type"):
        engines.bigquery_job_config({"flag": {"a": 1}})


@pytest.mark.parametrize("name", ["events", "shop.events", "my-project.shop_dw.events", "_t1"])
def test_valid_table_names(name):
    assert engines.validate_table_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "events; DROP TABLE items",
        "`events`",
        "a.b.c.d",
        "shop.events--",
        "1events",
        "",
        "p.d.t OR 1=1",
        "UPPER-project.d.t",
        "shop .events",
        "shop.events\n",  # a `$` anchor lets a trailing newline through (issue 15)
        "events\n",
    ],
)
def test_invalid_table_names_are_rejected(name):
    with pytest.raises(engines.WarehouseError, match="invalid table name"):
        engines.validate_table_name(name)


def test_render_puts_validated_names_as_identifiers_only():
    rendered = engines.render("SELECT e.user_id FROM events AS e JOIN items USING (item_id)", BQ_TABLES, "bigquery")
    assert "FROM `my-project`.`shop_dw`.`events` AS e" in rendered
    assert "JOIN `my-project`.`shop_dw`.`items`" in rendered
    with pytest.raises(engines.WarehouseError):
        engines.render("SELECT 1 FROM events", {"events": "x; DROP TABLE y"}, "bigquery")


@pytest.mark.parametrize(
    "args, message",
    [
        (("2024-02-01", "2024-01-01", "", 1), "empty window"),
        (("2024-01-01", "2024-01-01", "", 1), "empty window"),
        (("yesterday", "", "", 1), "not an ISO-8601"),
        (("", "", "view,click", 1), r"unknown event type\(s\) \['click'\]"),
        (("", "", "", 0), "min_events_per_user"),
        (("", "", "", 1.5), "min_events_per_user"),
    ],
)
def test_bad_parameters(args, message):
    with pytest.raises(runner.ExtractError, match=message):
        runner.ExtractParams.parse(*args)


def test_parameter_defaults_are_open_and_all_types():
    params = runner.ExtractParams.parse("", "", "", 1)
    assert params.window_start is None and params.window_end is None
    assert params.event_types == ["view", "cart", "fav", "purchase"]
    assert runner.ExtractParams.parse("2024-01-01T05:00:00+05:00", None, " view , ", 2).window_start == dt.datetime(
        2024, 1, 1, tzinfo=dt.timezone.utc
    )
