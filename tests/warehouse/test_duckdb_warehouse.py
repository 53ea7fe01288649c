"""The DuckDB warehouse: contents match the sources, and a failed build leaves no file."""

import json

import pyarrow as pa
import pytest

from components import schema
from components.warehouse import build, synthetic
from components.warehouse import duckdb_warehouse as dw

AMAZON = (
    "user_id,item_id,timestamp,cate_id,attr_ids\n1,10,1400000100,5,90 1 5\n1,11,1400000100,7,1 7\n"
    "2,11,1400000200,7,1 7\n"
)


def test_synthetic_build_holds_the_generated_tables(tmp_path):
    out = tmp_path / "shop.duckdb"
    counts = dw.build_warehouse("synthetic:tiny", out, seed=1)
    world = synthetic.make_world("tiny", 1)
    chunks = list(synthetic.iter_chunks(world))
    assert counts == {
        "events": sum(c.events.num_rows for c in chunks),
        "items": len(world.item_ids),
        "impressions": sum(c.impressions.num_rows for c in chunks),
    }
    assert dw.table_counts(out) == counts
    con = dw.connect(out)
    events = con.execute("SELECT * FROM events ORDER BY user_id, event_ts, event_seq").fetch_arrow_table()
    con.close()
    assert events.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
    expected = pa.concat_tables([c.events for c in chunks])
    assert events.column("item_id").to_pylist() == expected.column("item_id").to_pylist()
    assert list(tmp_path.iterdir()) == [out]


def test_public_source_and_cli(tmp_path, capsys):
    csv = tmp_path / "beauty.csv"
    csv.write_text(AMAZON)
    out = tmp_path / "wh" / "amazon.duckdb"
    build.main(["--source", f"amazon:{csv}", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"] == {"events": 3, "items": 2} == dw.table_counts(out)


def test_failed_build_leaves_nothing(tmp_path):
    out = tmp_path / "shop.duckdb"
    bad = synthetic.items_table(synthetic.make_world("tiny", 0)).drop_columns(["category"])
    with pytest.raises(schema.SchemaError, match="category"):
        with dw.WarehouseWriter(out, ("events", "items")) as writer:
            writer.append("items", bad)
            writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_existing_warehouse_is_replaced_whole(tmp_path):
    out = tmp_path / "shop.duckdb"
    dw.build_warehouse("synthetic:tiny", out, seed=0)
    before = dw.table_counts(out)
    csv = tmp_path / "a.csv"
    csv.write_text(AMAZON)
    dw.build_warehouse(f"amazon:{csv}", out)
    assert dw.table_counts(out) == {"events": 3, "items": 2} != before


@pytest.mark.parametrize("source", ["synthetic", "synthetic:", "csv:/tmp/x", "amazon"])
def test_bad_sources(source, tmp_path):
    with pytest.raises(ValueError, match="must be one of"):
        dw.build_warehouse(source, tmp_path / "x.duckdb")


def test_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic preset 'huge'"):
        dw.build_warehouse("synthetic:huge", tmp_path / "x.duckdb")


def test_uri_parsing():
    assert str(dw.duckdb_path("duckdb:///abs/shop.duckdb")) == "/abs/shop.duckdb"
    with pytest.raises(ValueError, match="names no file"):
        dw.duckdb_path("duckdb://")
