"""The evaluation report as a reader meets it: every section, and each figure's numbers checked against what the
evaluation measured (the HTML carries each figure's data as JSON beside the image). A first run (nothing blessed,
no A/B control) and a second run (against the first, blessed) are rendered with the test doubles; a DIN-like
ranker is scored beside the candidate. The page is also opened in headless Chromium when it is installed."""

import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from evaluation_doubles import load_doubles, write_model
from test_off_policy_gate import write_off_policy

from components import registry
from components.evaluation import breakdowns, data, plots, stage
from pipelines import report_check

AB = {
    "control": {
        "users": 50,
        "requests": 100,
        "impressions": 1000,
        "clicks": 170,
        "purchases": 20,
        "ctr": 0.17,
        "ctr_low": 0.15,
        "ctr_high": 0.19,
        "cvr": 0.118,
        "cvr_low": 0.07,
        "cvr_high": 0.17,
    },
    "treatment": {
        "users": 52,
        "requests": 104,
        "impressions": 1040,
        "clicks": 190,
        "purchases": 25,
        "ctr": 0.183,
        "ctr_low": 0.16,
        "ctr_high": 0.206,
        "cvr": 0.13,
        "cvr_low": 0.08,
        "cvr_high": 0.18,
    },
    "ctr_diff": 0.013,
    "ctr_z": 0.8,
    "ctr_p": 0.42,
    "cvr_diff": 0.012,
    "cvr_z": 0.3,
    "cvr_p": 0.76,
    "chi2": 0.04,
    "chi2_p": 0.84,
    "experiment": "ranker",
    "treatment_ratio": 0.5,
    "confidence": 0.95,
}
SECTIONS = (
    "run",
    "export",
    "intervals",
    "versus-blessed",
    "metrics",
    "rankers",
    "training",
    "examples",
    "breakdowns",
    "ab",
    "ope",
    "calibration",
)


class _Page(HTMLParser):
    """Section ids, figure data by name, image alts, and the text of every table cell row by row."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.figures, self.images, self.rows, self.text = [], {}, [], [], []
        self._data_for = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "script" and "figure-data" in attrs.get("class", ""):
            self._data_for = attrs["data-figure"]
        elif tag == "img":
            self.images.append(attrs["alt"])
        elif tag == "tr":
            self.rows.append([])
        elif tag == "td" and self.rows:
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._data_for = None

    def handle_data(self, text):
        if self._data_for:
            self.figures[self._data_for] = json.loads(text)
            return
        self.text.append(text)
        if self.rows and self.rows[-1]:
            self.rows[-1][-1] += text

    def row(self, first: str) -> list[str]:
        return next(r for r in self.rows if r and r[0] == first)


def _ranking_artifact(directory, model_type, losses, aucs):
    (directory / "ranker.json").write_text(
        json.dumps(
            {
                "model_config": {"model_type": model_type},
                "train_config": {"epochs": len(losses), "seed": 0},
                "test_metrics": {"loss_by_epoch": losses, "valid_auc_by_epoch": aucs},
            }
        )
    )


@pytest.fixture(scope="module")
def runs(tiny_features, today_item_ids, tmp_path_factory):
    """The first run (blessed, nothing before it) and a second one (gated against the first)."""
    root = tmp_path_factory.mktemp("report")
    off_policy = write_off_policy(root / "ope", mrdr_estimate=0.3)
    written = json.loads((off_policy / "ope.json").read_text())
    (off_policy / "ope.json").write_text(json.dumps({**written, "ab": AB}))
    from matplotlib.figure import Figure

    Figure(figsize=(1, 1)).savefig(off_policy / "ope_estimates.png")
    din = write_model(root / "din", "random", today_item_ids)[1]
    _ranking_artifact(din, "din", [0.69, 0.66], [0.55, 0.57])
    out = {}
    for name in ("first", "second"):
        retrieval_dir, ranking_dir = write_model(root / name, "step", today_item_ids)
        _ranking_artifact(ranking_dir, "dien", [0.6, 0.5, 0.45], [0.7, 0.75, 0.74])
        (retrieval_dir / "training_history.json").write_text(
            json.dumps(
                {
                    "epochs": [
                        {"epoch": e, "loss": 5.0 - e, "hit@20": 0.1 * e, "ndcg@20": 0.05 * e, "seconds": 1.0}
                        for e in (1, 2)
                    ]
                }
            )
        )
        result = stage.run_evaluation(
            tiny_features,
            retrieval_dir,
            ranking_dir,
            root / name / "summary.json",
            root / name / "report.html",
            registry_dir=root / "registry",
            config=stage.EvaluationConfig(candidates_n=30),
            load_models=load_doubles,
            off_policy_dir=off_policy,
            comparison_rankers={"din": din},
            candidate_ranker="dien",
        )
        out[name] = (result, (root / name / "report.html").read_text())
        # Export promotes a blessed model once its lists are written; the second run is gated against the first.
        registered = json.loads((root / name / "summary.json").read_text()).get("registered")
        if registered:
            registry.promote(root / "registry", registered["version"])
    return out


def test_every_section_is_there(runs):
    for _result, html in runs.values():
        page = _Page(html)
        assert [s for s in SECTIONS if s not in page.sections] == []
        assert set(page.images) >= {
            "gate_intervals",
            "recall_at_k",
            "recall_vs_n",
            "breakdown_segment",
            "breakdown_category",
            "training_curves",
            "rankers",
            "roc",
            "calibration",
            "ab_arms",
            "ope_estimates",
            "bandit_curves",
        }
        assert set(page.figures) == set(page.images)  # every image carries its numbers


def test_first_run_says_there_is_no_ab_control_and_nothing_to_compare(runs):
    first, second = (_Page(html) for _, html in runs.values())
    text, later = " ".join(first.text), " ".join(second.text)
    assert "no A/B control" not in later and "no control" in text and "control = treatment" in text
    assert "No model has been blessed before this run" in text
    assert "keeps the lists of the last blessed model" in later


def test_gate_interval_figure_and_reasons_state_the_bootstrap(runs):
    result, html = runs["first"]
    summary, page = result.summary, _Page(html)
    figure = page.figures["gate_intervals"]
    assert set(figure) == {"funnel", "popularity", "item_to_item"}
    for name, interval in figure.items():
        assert interval["low"] <= summary["ranking_metrics"][name]["ndcg@20"] == interval["mean"] <= interval["high"]
    assert "bootstrap interval over test users" in summary["gate"]["reasons"][0]
    assert "significant" in summary["gate"]["reasons"][0]
    second = runs["second"][0].summary
    assert set(second["gate_intervals"]["models"]) == {"funnel", "popularity", "item_to_item", "last_blessed_funnel"}
    assert "last blessed model" in second["gate"]["reasons"][1] and "bootstrap" in second["gate"]["reasons"][1]


def test_hit_curves_and_breakdowns_draw_the_measured_metrics(runs, tiny_features):
    result, html = runs["first"]
    summary, page = result.summary, _Page(html)
    curves = page.figures["recall_at_k"]
    for name, values in summary["ranking_metrics"].items():
        assert curves["hit"][name][19] == pytest.approx(values["hit@20"])  # K = 20
        assert curves["hit"][name][49] == pytest.approx(values["hit@50"])
    assert "funnel_din" in curves["hit"]  # the DIN ranker behind the same retrieval
    split = data.read_test_split(tiny_features)
    for figure, labels in (
        ("breakdown_segment", breakdowns.segment_labels(split.history_lengths)),
        ("breakdown_category", breakdowns.category_labels(split.target_categories)[0]),
    ):
        drawn = page.figures[figure]
        assert sum(drawn["users"]) == summary["users"]
        for bucket, users in zip(drawn["buckets"], drawn["users"]):
            assert users == int(np.sum(labels == bucket))
        for metric in ("hit@20", "ndcg@20"):  # users-weighted mean of the buckets = the overall figure
            overall = np.dot(drawn[metric]["funnel"], drawn["users"]) / summary["users"]
            assert overall == pytest.approx(summary["ranking_metrics"]["funnel"][metric])
    table = next(r for r in page.rows if r and r[0] == "funnel" and len(r) == 10)  # the next-item metrics table
    assert table[1:] == [
        f"{summary['ranking_metrics']['funnel'][m]:.4f}"
        for m in ("hit@5", "hit@10", "hit@20", "hit@50", "ndcg@5", "ndcg@10", "ndcg@20", "ndcg@50", "mrr")
    ]


def test_rankers_table_and_figure_hold_dien_and_din(runs):
    result, html = runs["first"]
    summary, page = result.summary, _Page(html)
    drawn = page.figures["rankers"]
    assert drawn["rankers"] == ["dien", "din"]
    assert drawn["auc"] == [summary["rankers"]["dien"]["auc"], summary["rankers"]["din"]["auc"]]
    assert drawn["auc"][0] > drawn["auc"][1]  # the step ranker beats the random one
    assert drawn["funnels"]["din"] == summary["ranking_metrics"]["funnel_din"]
    assert (
        next(r for r in page.rows if r and r[0] == "din" and len(r) == 7)[1]
        == f"{summary['rankers']['din']['auc']:.4f}"
    )
    assert "dien_no_aux" in " ".join(page.text)  # said not to have run here


def test_training_curves_are_what_the_artifacts_recorded(runs):
    curves = _Page(runs["first"][1]).figures["training_curves"]
    assert curves["retrieval"] == {"loss": [4.0, 3.0], "valid": {"hit@20": [0.1, 0.2], "ndcg@20": [0.05, 0.1]}}
    assert curves["dien"] == {"loss": [0.6, 0.5, 0.45], "valid": {"auc": [0.7, 0.75, 0.74]}}
    assert curves["din"]["valid"]["auc"] == [0.55, 0.57]


def test_versus_last_blessed_stage_by_stage(runs):
    second, html = runs["second"]
    versus = second.summary["versus_last_blessed"]
    assert versus["version"] == runs["first"][0].summary["model_version"]
    assert versus["funnel"]["last_blessed"] == runs["first"][0].summary["ranking_metrics"]["funnel"]
    assert versus["retrieval"]["last_blessed"] == runs["first"][0].summary["ranking_metrics"]["retrieval"]
    assert versus["ranker"]["last_blessed"]["auc"] == runs["first"][0].summary["rankers"]["dien"]["auc"]
    rows = [r for r in _Page(html).rows if r and r[0] in ("retrieval", "funnel", "ranker")]
    assert {(r[0], r[1]) for r in rows} >= {("retrieval", "ndcg@20"), ("funnel", "hit@20"), ("ranker", "auc")}


def test_example_lists_show_history_and_recommendations_with_categories(runs, tiny_features):
    summary = runs["first"][0].summary
    split = data.read_test_split(tiny_features)
    assert len(summary["examples"]) == 5
    for example in summary["examples"]:
        row = int(np.flatnonzero(split.user_ids == example["user_id"])[0])
        assert [e["item_id"] for e in example["last_items"]] == [split.item_ids[i] for i in split.hist_items[row][-5:]]
        assert len(example["recommended"]) == 10
        for entry in example["last_items"] + example["recommended"]:
            assert entry["category"] == "c" + str(int(entry["item_id"][1:]) // 10)  # the doubles' categories
        assert sum(e["is_next"] for e in example["recommended"]) == (
            example["next_item"]["item_id"] in [e["item_id"] for e in example["recommended"]]
        )
    assert summary["examples"][0]["user_id"] in runs["first"][1]


def test_ab_section_and_one_sentence_per_experiment_row(runs):
    page = _Page(runs["first"][1])
    assert page.figures["ab_arms"] == {
        "ctr": {"control": 0.17, "treatment": 0.183},
        "cvr": {"control": 0.118, "treatment": 0.13},
    }
    control = page.row("control")
    assert control[:5] == ["control", "50", "1000", "170", "20"] and control[6] == "[0.1500, 0.1900]"
    assert "no sample-ratio mismatch" in " ".join(page.text)
    for first in ("ips", "snips", "dm", "dr", "mrdr", "thompson", "greedy"):
        assert len(page.row(first)[-1].split()) > 5, f"{first} has no sentence saying what it measures"
    assert "not the off-policy estimate above" in page.row("greedy")[-1]


def test_calibration_states_it_is_not_a_real_rate(runs):
    page = _Page(runs["first"][1])
    assert plots.CALIBRATION_CAVEAT in " ".join(page.text)
    assert page.figures["calibration"]["positive_share"] == pytest.approx(0.5)


def test_run_metadata(runs):
    meta = runs["first"][0].summary["run_metadata"]
    assert meta["source"] == "duckdb:///doubles.duckdb" and meta["counts"]["users"] == 120
    assert meta["parameters"]["dien"]["epochs"] == 3 and meta["parameters"]["din"]["epochs"] == 2
    assert meta["parameters"]["evaluation"]["candidates_n"] == 30
    assert meta["image"].split(":")[-1] == meta["code_version"]["content_hash"]
    html_text = runs["first"][1]
    run_section = html_text[html_text.index('<section id="run">') :]
    assert run_section.index("<table><tr><td>source</td>") < run_section.index("</table>"), "no empty header row"


def test_bootstrap_differences_are_paired():
    from components.evaluation import bootstrap

    rng = np.random.default_rng(0)
    base = rng.random(2000)
    intervals, differences = bootstrap.paired_intervals({"a": base + 0.01, "b": base}, "a", resamples=200)
    assert differences["b"].interval.low == pytest.approx(0.01) and differences["b"].significant
    assert intervals["a"].low < intervals["a"].mean < intervals["a"].high
    noise = {"a": rng.random(200), "b": rng.random(200)}
    assert not bootstrap.paired_intervals(noise, "a", resamples=200)[1]["b"].significant
    with pytest.raises(ValueError, match="same users"):
        bootstrap.paired_intervals({"a": base, "b": base[:10]}, "a")


def require_chromium() -> None:
    """Skips where no browser is installed, but fails in CI, whose .ci/run installs one (make report-tools)."""
    if report_check.find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI opens the report in a real browser: `make report-tools` installs Debian's chromium")
        pytest.skip("no chromium: `make report-tools` (apt-get install chromium) to open the report in a browser")


def test_report_renders_in_headless_chromium(runs, tmp_path):
    require_chromium()
    for name, (_, html) in runs.items():
        path = tmp_path / f"{name}.html"
        path.write_text(html)
        result = report_check.check_report(path, tmp_path / name)
        assert result["problems"] == [] and result["images"] >= 12
        assert result["screenshots"] and all(
            open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in result["screenshots"]
        )


def test_report_check_fails_on_a_missing_image_and_a_console_error(tmp_path):
    require_chromium()
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><head><link rel='icon' href='data:,'></head><body>"
        "<img alt='gone' src='missing.png'><script>console.error('boom')</script></body></html>"
    )
    problems = report_check.check_report(page)["problems"]
    assert any("image did not load: gone" in p for p in problems)
    assert any("boom" in p for p in problems)
