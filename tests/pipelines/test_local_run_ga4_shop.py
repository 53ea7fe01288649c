"""End to end on GA4 export files that no code of the project wrote: `make pipeline-run SOURCE=ga4:tests/pipelines/
ga4_shop` (a week of a small shop, the stories and their hand-computed counts in write_ga4_shop.py) extracts, trains,
says whether it blesses and why, and exports or says that it skipped the export.

The run goes through pipelines.run's entry with the arguments `make pipeline-run` passes (`--param` for each of
PARAMS), and what it prints is what is checked. The gate keeps its default margin: on this shop each shopper's
next item follows from the last one, so the item-to-item baseline is strong (seed 0: funnel NDCG@20 0.59 against its
0.69, NOT BLESSED, export skipped; the same with the default epochs). Whichever way the gate decides, the summary
must give the reason and name only what was written; a blessed run must have exported every user's top_k list.
The run's CPU is mostly the tasks' fixed costs (a Python with TensorFlow per task); training here takes seconds.
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import write_ga4_shop

from pipelines import run

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "ga4_shop"
TOP_K = 10
# Few epochs, and neither the bandit re-rankers nor the campaign tables (no impressions, nothing for them here), keep
# the run short; a top_k of its own shows that a blessed export's list length is the run's parameter.
PARAMS = ("retrieval_epochs=2", "ranking_epochs=1", "enable_bandit=false", "campaign_outputs=", f"top_k={TOP_K}")


def test_fixture_files_are_what_the_script_writes(tmp_path):
    written = write_ga4_shop.write(tmp_path / "again")
    assert sum(written.values()) == 618 and len(written) == 6  # Monday 4 to Saturday 9 March, the property's days
    for name in written:
        assert (tmp_path / "again" / name).read_text() == (FIXTURE / name).read_text(), f"{name}: rerun the script"
    assert sorted(p.name for p in FIXTURE.iterdir()) == sorted(written)


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory):
    """(printed lines, outputs) of `make pipeline-run SOURCE=ga4:<fixture> OUTPUT=<tmp> PARAMS="..."`."""
    output = tmp_path_factory.mktemp("ga4_shop_run")
    argv = ["pipelines.run", "--target", "local", "--output", str(output), "--shop", "default"]
    argv += ["--source", f"ga4:{FIXTURE}"] + [word for p in PARAMS for word in ("--param", p)]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(sys, "argv", argv)
        try:
            run.main()
        except RuntimeError as err:  # a failed task: what the run printed holds its traceback
            pytest.fail(f"{err}\n{printed.getvalue()[-4000:]}")
    text = printed.getvalue()
    closing, _, outputs = text.rpartition("outputs: ")
    return closing.splitlines(), json.loads(outputs)


def test_extract_counts_are_the_hand_computed_ones(shop_run):
    _, outputs = shop_run
    manifest = json.loads((Path(outputs["run"]) / "extract" / "extracted" / "manifest.json").read_text())
    assert manifest["rows"] == {"events": 220, "users": 30, "items": 40}
    assert manifest["dropped"] == {
        "events": {"duplicate_row": 1, "user_below_min_events": 6},
        "ga4_rows": {
            "event_name:begin_checkout": 20,
            "event_name:first_visit": 34,
            "event_name:login": 10,
            "event_name:page_view": 220,
            "event_name:session_start": 64,
            "event_name:view_cart": 20,
            "event_name:view_item_list": 30,
            "event_name:view_promotion": 10,
            "no_items": 1,
            "no_user_id": 1,
        },
        "ga4_items": {"no_item_id": 1},
    }
    ga4 = manifest["ga4"]
    assert ga4["rows_scanned"] == 618 and ga4["list_impressions"] == 130
    assert ga4["kept_rows_stitched_to_user_id"] == 50 and ga4["kept_rows_of_pseudo_ids_with_several_user_ids"] == 0
    assert ga4["kept_rows_sharing_user_timestamp"] == 2

    events = pq.read_table(Path(outputs["run"]) / "extract" / "extracted" / "events.parquet").to_pandas()
    assert events.event_type.value_counts().to_dict() == {"view": 120, "cart": 50, "purchase": 40, "fav": 10}
    signed_in = events[events.user_id.str.startswith("cust-")]
    assert signed_in.user_id.nunique() == 10 and len(signed_in) == 80  # stitched: their anonymous browsing too
    items = pq.read_table(Path(outputs["run"]) / "extract" / "extracted" / "items.parquet").to_pandas()
    assert items.category.value_counts().to_dict() == dict.fromkeys(write_ga4_shop.CATEGORIES, 8)
    hoodie = items.set_index("item_id").loc[write_ga4_shop.SALE[0]]
    assert hoodie.price == write_ga4_shop.SALE[1]  # the latest price seen, from the sale on
    assert items.brand.isna().sum() == 2  # "(not set)" counts as none


def test_training_ran_and_the_summary_says_whether_it_blessed_and_why(shop_run):
    lines, outputs = shop_run
    run_dir = Path(outputs["run"])
    for task in ("features", "retrieval", "ranking", "evaluation"):
        assert (run_dir / task / "executor_output.json").exists(), f"task {task} did not run"
    summary = json.loads(Path(outputs["summary"]).read_text())
    assert summary["users"] == 30
    verdict = "BLESSED" if summary["blessed"] else "NOT BLESSED"
    (decision,) = [i for i, line in enumerate(lines) if line.startswith(("BLESSED: ", "NOT BLESSED: "))]
    assert lines[decision].startswith(f"{verdict}: funnel ndcg@20 ") and lines[decision].endswith("Why:")
    reasons = summary["gate"]["reasons"]
    assert reasons and lines[decision + 1 : decision + 1 + len(reasons)] == [f"  {r}" for r in reasons]
    skipped = json.loads((run_dir / "off-policy-evaluation" / "report" / "skipped.json").read_text())["skipped"]
    assert "GA4 export logs no propensities" in skipped


def test_a_blessed_run_exports_every_user_top_k_items_and_one_that_is_not_says_it_skipped(shop_run):
    lines, outputs = shop_run
    text = "\n".join(lines)
    named = {name: path for name, path in outputs.items() if name not in ("run_time",) and isinstance(path, str)}
    assert all(Path(path).exists() for path in named.values()), "an output named that was not written"
    if outputs["blessed"]:
        assert outputs["exported"] and "export skipped" not in text
        with duckdb.connect(outputs["recommendations"], read_only=True) as con:
            users, rows, longest = con.execute(
                "SELECT COUNT(DISTINCT user_id), COUNT(*), MAX(rank) FROM recommendations"
            ).fetchone()
        assert (users, rows, longest) == (30, 30 * TOP_K, TOP_K)
        assert f"exported to {outputs['recommendations']}" in text
    else:
        assert not outputs["exported"] and "recommendations" not in outputs and "registry" not in outputs
        assert (
            "export skipped (not blessed): nothing was written for users; no recommendations table exists yet" in text
        )
        assert not (Path(outputs["run"]) / "export" / "executor_output.json").exists()
