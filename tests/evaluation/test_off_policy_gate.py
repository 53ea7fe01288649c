"""Off-policy estimates in the gate (optional), the report and the metrics; a no-op without impressions."""

import json

import pytest
from evaluation_doubles import load_doubles, write_model

from components import schema
from components.evaluation import data, gate, stage
from components.kfp_metrics import log_metrics

BASELINES = {"popularity": {"ndcg@20": 0.01}, "item_to_item": {"ndcg@20": 0.05}}
GOOD_FUNNEL = {"ndcg@20": 0.06}  # beats both baselines: only the OPE condition can refuse it


def evidence(**estimates) -> gate.OffPolicyEvidence:
    return gate.OffPolicyEvidence(estimates=estimates, logged_click_rate=0.5)


def test_ope_condition_blesses_or_rejects_an_otherwise_passing_candidate():
    on = gate.GateConfig(use_ope=True, ope_estimator="snips", ope_margin=0.5)  # required: 0.5 * (1 - 0.5) = 0.25
    at_required = gate.decide(GOOD_FUNNEL, BASELINES, None, on, evidence(snips=0.25, mrdr=0.1))
    assert at_required.blessed and at_required.reasons[-1].startswith(
        "PASS: candidate click rate (snips OPE) 0.2500 >="
    )
    below = gate.decide(GOOD_FUNNEL, BASELINES, None, on, evidence(snips=0.2499, mrdr=0.9))
    assert not below.blessed
    assert [c.passed for c in below.comparisons] == [True, False]
    assert "FAIL" in below.reasons[-1] and "logging policy's observed click rate (0.5000)" in below.reasons[-1]
    mrdr = gate.decide(GOOD_FUNNEL, BASELINES, None, gate.GateConfig(use_ope=True), evidence(snips=0.9, mrdr=0.49))
    assert not mrdr.blessed, "the default estimator (mrdr) with no margin needs at least the logged click rate"


def test_ope_off_states_the_estimate_but_does_not_decide():
    decision = gate.decide(GOOD_FUNNEL, BASELINES, None, gate.GateConfig(), evidence(mrdr=0.1))
    assert decision.blessed and len(decision.comparisons) == 1
    assert decision.notes[0].startswith("INFO (gate_on_ope is off, so not applied): FAIL: candidate click rate (mrdr")


def test_without_impressions_the_ope_condition_is_a_stated_no_op():
    on = gate.GateConfig(use_ope=True)
    skipped = gate.OffPolicyEvidence(unavailable="the warehouse has no impressions (public data)")
    for off_policy in (skipped, None):
        decision = gate.decide(GOOD_FUNNEL, BASELINES, None, on, off_policy)
        assert decision.blessed and len(decision.comparisons) == 1
        assert decision.notes[0].startswith("NOT APPLIED: the off-policy condition (gate_on_ope) has no estimate")
    assert "no impressions" in gate.decide(GOOD_FUNNEL, BASELINES, None, on, skipped).to_json()["reasons"][-1]


def test_bad_ope_settings_are_refused():
    with pytest.raises(ValueError, match="ope_estimator"):
        gate.GateConfig(ope_estimator="ipw")
    with pytest.raises(ValueError, match="ope_margin"):
        gate.GateConfig(ope_margin=1.0)
    with pytest.raises(ValueError, match="no 'dr' estimate"):
        gate.decide(GOOD_FUNNEL, BASELINES, None, gate.GateConfig(use_ope=True, ope_estimator="dr"), evidence(ips=0.3))


def write_off_policy(directory, mrdr_estimate: float):
    """The off-policy evaluation stage's layout (tests/experiments checks the real stage writes it)."""
    from matplotlib.figure import Figure

    directory.mkdir(parents=True)
    ope = {
        "truth": 0.31,
        "repeats": 2,
        "requests_per_log": 100,
        "epsilon": 0.1,
        "target": "FunnelRanker",
        "weights": {"ess_share": 0.023, "max_weight": 599.2, "support": 1.0},
    }
    for name in gate.OPE_ESTIMATORS:
        estimate = mrdr_estimate if name == "mrdr" else 0.3
        ope[name] = {
            "estimate": estimate,
            "bias": estimate - 0.31,
            "rmse": abs(estimate - 0.31) + 0.01,
            "per_repeat": [estimate - 0.01, estimate + 0.01],
        }
    ope["weighted"] = {"reward_weighting": "impression=0.5,click=1,mute=0", "truth": 0.62}
    ope["weighted"] |= {name: {"estimate": 0.61, "bias": -0.01, "rmse": 0.02} for name in gate.OPE_ESTIMATORS}
    bandit = {
        "bayesian_fm": {
            "cumulative_reward": 1300.0,
            "after_shift_reward": 760.0,
            "cumulative_score": 2900.0,
            "spread": {"cumulative_reward": 40.0},
        },
        "thompson": {"cumulative_reward": 1200.0, "after_shift_reward": 700.0},
        "greedy": {"cumulative_reward": 1000.0, "after_shift_reward": 550.0},
        "setup": {"rounds": 12},
    }
    logged = {"impressions": 1000, "clicks": 170, "click_rate": 0.17}
    (directory / "ope.json").write_text(json.dumps({"ab": {}, "ope": ope, "bandit": bandit, "logged": logged}))
    Figure(figsize=(1, 1)).savefig(directory / "bandit_curves.png")
    return directory


def evaluate(tmp_path, name, model, **options):
    metrics_out = {}

    class Metrics:
        log_metric = staticmethod(metrics_out.__setitem__)

    from kfp import dsl

    out = tmp_path / name
    figures = stage.run(
        *map(str, model),
        str(out / "report.html"),
        str(out / "summary.json"),
        registry_dir="",
        candidates_n=30,
        gate_metric="ndcg@20",
        gate_baselines="popularity,item_to_item",
        margin_vs_baseline=0.0,
        margin_vs_blessed=0.0,
        model_version="v",
        load_models=load_doubles,
        **options,
    )
    log_metrics(Metrics.log_metric, figures, dsl.ClassificationMetrics(name="c", uri=str(out / "c")))
    blessed = figures["blessed"] == 1.0
    return blessed, metrics_out, (out / "report.html").read_text(), json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def good_model(tiny_features, today_item_ids, tmp_path_factory):
    return (str(tiny_features), *write_model(tmp_path_factory.mktemp("good"), "step", today_item_ids))


def test_evaluation_stage_reports_logs_and_gates_on_the_estimates(good_model, tmp_path):
    worse = write_off_policy(tmp_path / "worse", mrdr_estimate=0.12)
    blessed, metrics_out, page, summary = evaluate(tmp_path, "off", good_model, off_policy=str(worse))
    assert blessed, "gate_on_ope is off by default"
    assert "Off-policy evaluation of the new ranker" in page and '<img alt="bandit_curves"' in page
    assert "<td>mrdr</td><td class='n'>0.1200</td><td>-0.1900</td>" in page and "-29.4%" in page  # 0.12 / 0.17 - 1
    assert metrics_out["ope_mrdr_estimate"] == 0.12 and metrics_out["ope_logged_click_rate"] == 0.17
    assert metrics_out["ope_truth"] == 0.31 and metrics_out["bandit_thompson_cumulative_reward"] == 1200.0
    assert summary["off_policy"]["estimators"]["ips"] == pytest.approx({"estimate": 0.3, "bias": -0.01, "rmse": 0.02})
    assert "<th>ess_share</th>" in page and "<td class='n'>0.0230</td>" in page
    assert "under the weighting impression=0.5,click=1,mute=0" in page and "<td class='n'>0.6200</td>" in page
    assert "<td>bayesian_fm</td><td>1300 \u00b120</td>" in page and "<td>2900</td>" in page

    blessed, _, page, summary = evaluate(tmp_path, "on", good_model, off_policy=str(worse), gate_on_ope=True)
    assert not blessed and "NOT BLESSED" in page
    assert summary["gate"]["reasons"][-1].startswith("FAIL: candidate click rate (mrdr OPE) 0.1200 < 0.1700")
    better = write_off_policy(tmp_path / "better", mrdr_estimate=0.2)
    assert evaluate(tmp_path, "on-better", good_model, off_policy=str(better), gate_on_ope=True)[0]


def test_evaluation_without_impressions_says_so_and_blesses_on_the_metrics(good_model, tmp_path):
    skipped = tmp_path / "skipped"
    skipped.mkdir()
    (skipped / "skipped.json").write_text(json.dumps({"skipped": "the warehouse has no impressions (public data)"}))
    blessed, metrics_out, page, summary = evaluate(
        tmp_path, "public", good_model, off_policy=str(skipped), gate_on_ope=True
    )
    assert blessed and not any(name.startswith(("ope_", "bandit_")) for name in metrics_out)
    assert "Not available: the warehouse has no impressions (public data)" in page
    assert "has no estimate, because the warehouse has no impressions" in summary["gate"]["reasons"][-1]


def test_an_off_policy_output_without_its_files_is_refused(tmp_path):
    with pytest.raises(schema.SchemaError, match="ope.json or skipped.json"):
        data.read_off_policy(tmp_path)
    (tmp_path / "ope.json").write_text(json.dumps({"ope": {"truth": 0.3, "ips": {}}, "bandit": {}}))
    with pytest.raises(schema.SchemaError, match="lacks \\['logged', 'ope.snips', 'ope.dm', 'ope.dr', 'ope.mrdr'\\]"):
        data.read_off_policy(tmp_path)
