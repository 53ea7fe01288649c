"""End to end: the whole DAG through kfp.local on the tiny synthetic shop, as `make pipeline-run` runs it.

A relative gate margin of -0.99 makes the tiny, briefly trained model pass the gate, so that the export branch
under `dsl.If` runs too; the gate's off-policy condition is on with a 0.99 tolerance, so that its parameters and
the off-policy output reach the gate without deciding it. The gate's own behaviour both ways is tested in
tests/evaluation.
"""

import json
from pathlib import Path

import duckdb
import pytest

from pipelines.run import run_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("local_run")
    return run_local(
        output,
        "synthetic:tiny",
        seed=0,
        retrieval_epochs=2,
        ranking_epochs=1,
        margin_vs_baseline=-0.99,
        gate_on_ope=True,
        ope_estimator="snips",
        ope_margin=0.99,
    )


def test_every_stage_writes_its_outputs(local_run):
    run = Path(local_run["run"])
    for task in (
        "extract",
        "features",
        "retrieval",
        "ranking",
        "evaluation",
        "export",
        "bandit-reranker",
        "off-policy-evaluation",
        "ab-analysis",
    ):
        assert (run / task / "executor_output.json").exists(), f"task {task} did not run"
    assert (run / "features" / "features" / "feature_spec.json").exists()
    assert (run / "retrieval" / "model" / "index").is_dir()


def test_report_and_experiment_figures(local_run):
    report = Path(local_run["report"]).read_text()
    assert report.count("<img") >= 3
    summary = json.loads(Path(local_run["summary"]).read_text())
    assert summary["blessed"] is True
    ope = json.loads((Path(local_run["run"]) / "off-policy-evaluation" / "report" / "ope.json").read_text())
    assert 0 < ope["ope"]["truth"] < 1


def test_evaluation_reports_and_gates_on_the_off_policy_estimates(local_run):
    summary = json.loads(Path(local_run["summary"]).read_text())
    ope = json.loads((Path(local_run["run"]) / "off-policy-evaluation" / "report" / "ope.json").read_text())
    assert summary["off_policy"]["estimators"]["snips"]["estimate"] == ope["ope"]["snips"]["estimate"]
    assert summary["off_policy"]["logged"] == ope["logged"]
    ope_check = summary["gate"]["comparisons"][-1]
    assert ope_check["metric"] == "click rate (snips OPE)" and ope_check["passed"]
    assert ope_check["required"] == pytest.approx(0.01 * ope["logged"]["click_rate"])
    report = Path(local_run["report"]).read_text()
    assert "Off-policy evaluation of the new ranker" in report and '<img alt="bandit_curves"' in report
    executor_output = (Path(local_run["run"]) / "evaluation" / "executor_output.json").read_text()
    assert '"ope_snips_estimate"' in executor_output and '"ope_logged_click_rate"' in executor_output


def test_recommendations_table_is_complete(local_run):
    with duckdb.connect(local_run["recommendations"], read_only=True) as con:
        total, users, max_rank = con.execute(
            "select count(*), count(distinct user_id), max(rank) from recommendations"
        ).fetchone()
        duplicates = con.execute(
            "select count(*) from (select user_id, rank from recommendations group by all having count(*) > 1)"
        ).fetchone()[0]
        variants = {row[0] for row in con.execute("select distinct variant from recommendations").fetchall()}
        generated = {row[0] for row in con.execute("select distinct generated_at from recommendations").fetchall()}
    assert users > 0 and total == users * max_rank
    assert {t.isoformat() for t in generated} == {local_run["run_time"]}  # the run's own time, one partition
    assert duplicates == 0
    assert variants == {"control", "treatment"}


def test_blessed_model_is_registered(local_run):
    from components.registry import last_blessed

    blessed = last_blessed(local_run["registry"])
    assert blessed is not None and blessed.version == Path(local_run["run"]).name
    assert blessed.retrieval_dir.is_dir() and blessed.ranking_dir.is_dir()


def test_campaign_outputs_reach_the_tables_and_the_report(local_run):
    import duckdb

    run = Path(local_run["run"])
    campaign = json.loads((run / "campaign-evaluation" / "report" / "campaign.json").read_text())
    assert 0 <= campaign["complementary_items"]["complementary"]["hit@10"] <= 1
    assert "time split" in campaign["audiences_skipped"]  # the default split is leave-last-out
    summary = json.loads(Path(local_run["summary"]).read_text())
    assert summary["campaign"] == campaign
    assert "Campaign outputs: complementary items and audiences" in Path(local_run["report"]).read_text()
    with duckdb.connect(local_run["recommendations"], read_only=True) as con:
        for name in ("complementary_items", "audiences"):
            assert con.execute(f"SELECT count(*) FROM latest_{name}").fetchone()[0] > 0, name
