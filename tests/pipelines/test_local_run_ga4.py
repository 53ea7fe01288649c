"""End to end from GA4 export files: the tiny synthetic shop written as `bq extract` JSON, then `make pipeline-run
SOURCE=ga4:<folder>` as pipelines.run runs it: extract through the GA4 queries, train, bless, export.

The gate's margin is loosened as in test_local_run (a tiny, briefly trained model); impressions do not survive
the GA4 shape (no propensities), so the off-policy stages must say so rather than run.
"""

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from components.warehouse import duckdb_warehouse, ga4
from pipelines.run import run_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ga4_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ga4_run")
    contract = root / "shop.duckdb"
    duckdb_warehouse.build_warehouse("synthetic:tiny", contract, seed=0)
    con = duckdb_warehouse.connect(contract)
    tables = {t: con.execute(f"SELECT * FROM {t}").to_arrow_table() for t in ("events", "items", "impressions")}
    con.close()
    ga4.write_export(root / "export", tables["events"], tables["items"], tables["impressions"])
    outputs = run_local(
        root / "out", f"ga4:{root / 'export'}", seed=0, retrieval_epochs=2, ranking_epochs=1, margin_vs_baseline=-0.99
    )
    return outputs, tables


def test_ga4_export_is_extracted_trained_blessed_and_exported(ga4_run):
    outputs, tables = ga4_run
    run = Path(outputs["run"])
    manifest = json.loads((run / "extract" / "extracted" / "manifest.json").read_text())
    assert manifest["ga4"]["rows_scanned"] > manifest["rows"]["events"] > 0
    assert manifest["dropped"]["ga4_rows"]["event_name:page_view"] > 0  # written beside every view, dropped by name
    assert manifest["ga4"]["list_impressions"] == tables["impressions"].num_rows
    extracted_items = set(pq.read_table(run / "extract" / "extracted" / "items.parquet").column("item_id").to_pylist())
    assert extracted_items <= set(tables["items"].column("item_id").to_pylist())

    assert json.loads(Path(outputs["summary"]).read_text())["blessed"] is True
    with duckdb.connect(outputs["recommendations"], read_only=True) as con:
        users, rows = con.execute("SELECT COUNT(DISTINCT user_id), COUNT(*) FROM recommendations").fetchone()
    assert users > 0 and rows > users
    skipped = json.loads((run / "off-policy-evaluation" / "report" / "skipped.json").read_text())["skipped"]
    assert "GA4 export logs no propensities" in skipped
