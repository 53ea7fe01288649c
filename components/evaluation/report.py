"""The HTML report: one self-contained page (plots inlined as PNG, each with the numbers it draws as JSON beside
it) that says at a glance whether the model was blessed and why, how sure that is, how it compares with the
last blessed model stage by stage, where each model wins or loses, what users are shown, and what the logged
impressions say (A/B outcomes, off-policy estimates, the bandit study).

Sections follow the questions a shop's ML engineer asks in order: the decision, what ran on which data, the
evidence behind the decision, the rankers, what users see, where the model is weak, and the experiments.
"""

from __future__ import annotations

import html
import json

from components.evaluation.plots import CALIBRATION_CAVEAT, Plot

TABLE_METRICS = ("hit@5", "hit@10", "hit@20", "hit@50", "ndcg@5", "ndcg@10", "ndcg@20", "ndcg@50", "mrr")
STYLE = (
    "body{font-family:sans-serif;max-width:1150px;margin:auto;padding:0 12px;color:#222}"
    "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
    "vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}.verdict{border:3px solid;padding:4px 16px}"
    "figure{margin:8px 0}img{max-width:100%}figcaption{font-size:90%;color:#444;max-width:900px}"
    ".items{margin:0;padding:0;list-style:none}.items li{display:inline-block;margin:1px 6px 1px 0;padding:0 4px;"
    "border:1px solid #ddd;border-radius:3px;font-size:90%}.items li.hit{border-color:#1b9e77}.note{background:#fff3cd;border-left:4px solid #d9a400;padding:6px 10px}.hit{font-weight:bold;color:#1b9e77}"
    "table.breakdown td{text-align:right;white-space:nowrap}table.breakdown td:first-child{text-align:left}"
    "nav a{margin-right:10px}details{margin:6px 0}"
)

OPE_ROWS = {
    "logged": "What the shop's current ranker (the logging policy) earned: clicks per shown slot, counted in the "
    "warehouse's impressions.",
    "truth": "What the new ranker would earn per slot on the same requests, computed exactly from the simulator's "
    "known click model: only a simulated shop has this row.",
    "ips": "Inverse propensity scoring: logged clicks reweighted by how much more often the new ranker would show "
    "that item in that slot; unbiased, with the largest variance.",
    "snips": "Self-normalised IPS: IPS divided by the mean weight; slightly biased, much less variance.",
    "dm": "Direct method: a click model fitted on the logs predicts the new ranker's clicks; low variance, biased "
    "where that model is wrong.",
    "dr": "Doubly robust: the direct method corrected by IPS on its errors; unbiased when either the weights or "
    "the click model is right.",
    "mrdr": "More robust doubly robust: DR whose click model is fitted to make DR's variance small.",
}
BANDIT_ROWS = {
    "bayesian_fm": "A Bayesian factorization machine (user, item, category, the user's top category, the last "
    "viewed category and the time as factor embeddings; Laplace posterior) re-ranking by Thompson sampling, "
    "LINE's arm model.",
    "linucb": "LinUCB over the linear bandit's features: ranks by an upper confidence bound (the arm LINE started "
    "from).",
    "thompson": "The bandit re-ranking retrieval's candidates by Thompson sampling, learning from each round's "
    "simulated clicks (it explores).",
    "exploit": "The same bandit ranking by its posterior mean: it learns but never explores.",
    "greedy": "The new ranker's own top K of retrieval's candidates, fixed, in the bandit simulator's rounds. It is "
    "not the off-policy estimate above: that one is the ranker's click rate on the logged requests' "
    "slots (explored with probability epsilon), this one counts whole slates of fresh simulated users, "
    "before and after their interests shift.",
    "random": "Random candidates from retrieval's list: the floor every policy should clear.",
}


def _cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape("" if v is None else str(v))


def table(header: list[str], rows: list[list], css: str = "") -> str:
    """Numbers right-aligned (class n), text left-aligned; no header row when every header is empty (a
    key-value table), which a browser draws as an empty row."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    head = f"<tr>{head}</tr>" if any(header) else ""
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='n'>{_cell(v)}</td>"
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"<td>{_cell(v)}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table{f' class={css!r}' if css else ''}>{head}{body}</table>"


def figure(name: str, plot: Plot) -> str:
    """The image, its caption, and the numbers it draws (JSON, never executed) for checking it."""
    data = json.dumps(plot.data, allow_nan=False, default=float).replace("</", "<\\/")
    return (
        f'<figure id="fig-{html.escape(name)}"><img alt="{html.escape(name)}" src="data:image/png;base64,{plot.png}">'
        f"<figcaption>{html.escape(plot.caption)}</figcaption>"
        f'<script type="application/json" class="figure-data" data-figure="{html.escape(name)}">{data}</script>'
        "</figure>"
    )


def _section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{"".join(parts)}</section>'


def _p(text: str, css: str = "") -> str:
    return f"<p{f' class={css!r}' if css else ''}>{html.escape(text)}</p>"


def _fig(figures: dict[str, Plot], *names: str) -> str:
    return "".join(figure(n, figures[n]) for n in names if n in figures)


def _scored_users(summary: dict) -> str:
    """ "N test users", or "N of M test users (...)" when evaluation scored a sample (max_users)."""
    total = summary.get("users_in_split", summary["users"])
    if total == summary["users"]:
        return f"{summary['users']} test users"
    return f"{summary['users']} of {total} test users (those whose ids hash lowest: the same users every run)"


def verdict(summary: dict) -> str:
    """The report's opening banner: BLESSED or NOT BLESSED and what export does because of it."""
    gate = summary["gate"]
    word, colour = ("BLESSED", "#1b9e77") if gate["blessed"] else ("NOT BLESSED", "#d95f02")
    after = (
        "Export runs: top lists for every user, A/B arm per user."
        if gate["blessed"]
        else "Export is skipped: users keep the last blessed model's lists."
    )
    return (
        f'<div class="verdict" style="border-color:{colour}"><h2 style="color:{colour}">{word}</h2><ul>'
        + "".join(f"<li>{html.escape(r)}</li>" for r in gate["reasons"])
        + "</ul>"
        + _p(
            f"Gate metric: funnel {gate['metric']} on {_scored_users(summary)} (full catalogue of "
            f"{summary['items']} items, earlier items masked). {after}"
        )
        + "</div>"
    )


def ab_control_note(summary: dict) -> str:
    """What the A/B arms get: the control arm's model (the last blessed one), or why there is no control yet."""
    if summary.get("previous_blessed"):
        return _p(
            f"A/B: the control arm keeps the lists of the last blessed model "
            f"{summary['previous_blessed']['version']}; the treatment arm gets this model's."
        )
    return _p(
        "First run: no model was blessed before, so the A/B experiment has no control. If this model is "
        "exported, both arms get its lists (control = treatment); the A/B comparison becomes meaningful from "
        "the next blessed model on.",
        "note",
    )


def metadata_section(meta: dict) -> str:
    """The run's provenance: data source and window, each stage's parameters, the image and the code version."""
    params = meta["parameters"]
    extract = params.get("extract", {})
    window = (
        f"{extract.get('window_start') or 'start of data'} to {extract.get('window_end') or 'end of data'}"
        if extract
        else "not recorded (no extract output passed)"
    )
    code = meta["code_version"]
    rows = [
        ["source", meta["source"]],
        ["window", window],
        *[[f"extracted {name} rows", n] for name, n in meta["rows"].items()],
        *[[name, n] for name, n in meta["counts"].items()],
        ["image", meta["image"]],
        ["code (content hash of the image's files)", code["content_hash"]],
        ["git commit", code["git_commit"] or "none (not a git checkout: the content hash names the code)"],
    ]
    parameter_rows = [
        [stage, name, json.dumps(value) if isinstance(value, (list, dict)) else value]
        for stage, values in params.items()
        for name, value in values.items()
    ]
    return _section(
        "run",
        "Run",
        table(["", ""], rows),
        "<details><summary>Parameters, as each stage recorded them</summary>"
        + table(["stage", "parameter", "value"], parameter_rows)
        + "</details>",
    )


def lineage_section(summary: dict) -> str:
    """Data window, parent model, new items and the data checks against the last blessed run (issue 23)."""
    lineage = summary.get("lineage")
    if not lineage:
        return ""
    window = lineage["data_window"]
    split_window = window.get("split_window") or {}
    parent = lineage.get("parent_model")
    rows = [
        [
            "extract window",
            f"{window.get('window_start') or 'start of data'} to {window.get('window_end') or 'end of data'}",
        ],
        ["run time", window.get("run_time") or ""],
        ["split", window.get("split") or ""],
    ]
    if split_window:
        rows.append(["train before", split_window.get("cut", "")])
        rows += [[name, " to ".join(split_window[name])] for name in ("valid", "test") if name in split_window]
    rows.append(
        [
            "parent model (warm start)",
            f"{parent.get('parent_version')} ({parent.get('carried_items')} items carried)"
            if parent
            else "none: trained from scratch",
        ]
    )
    rows.append(["compared with", lineage.get("compared_with") or "no last blessed model"])
    parts = [table(["", ""], rows)]
    checks = summary.get("data_checks")
    if checks is None:
        parts.append(_p("No data checks were recorded by the features stage."))
    elif not checks.get("reference"):
        parts.append(_p(checks.get("note", "No last blessed run to compare the data with.")))
    else:
        drift_rows = [
            [name, d["psi"], d["js"], "DRIFT" if d["drift"] else "ok"] for name, d in checks["distributions"].items()
        ]
        thresholds = checks["thresholds"]
        parts.append(
            _p(
                f"The extract's distributions against those of the last blessed run "
                f"({checks.get('reference_version') or 'unnamed'}); drift above PSI {thresholds['psi']} or "
                f"Jensen-Shannon distance {thresholds['js']}."
            )
        )
        parts.append(table(["distribution", "PSI", "JS distance", ""], drift_rows))
        change_rows = [[k, v["current"], v["reference"]] for k, v in checks.get("changes", {}).items()]
        parts.append(table(["", "this run", "last blessed run"], change_rows))
        for warning in checks.get("warnings", []):
            parts.append(_p(f"Warning: {warning}.", "note"))
    new_items = summary.get("new_items")
    if new_items:
        parts.append(
            _p(
                f"New items (no train events): {new_items['targets']} test targets; HIT@20 {new_items['hit@20']:.4f} "
                f"for the model against {new_items['baseline_hit@20']:.4f} for popularity within the item's category"
                + _all_targets(new_items.get("all_targets"))
            )
        )
    return _section("lineage", "Data window, lineage and data checks", *parts)


def _all_targets(every: dict | None) -> str:
    """The new-item sentence's end: both on every test target with a history (a summary from before it: none)."""
    if not every:
        return "."
    return (
        f"; on all {every['targets']} test targets with a history, {every['hit@20']:.4f} against "
        f"{every['baseline_hit@20']:.4f} (the baseline lists every new item of the user's category near the top)."
    )


def intervals_section(summary: dict, figures: dict[str, Plot]) -> str:
    """The gate metric's bootstrap intervals per model and of the candidate's differences to each."""
    intervals = summary["gate_intervals"]
    models = intervals["models"]
    differences = intervals["differences"]
    rows = [
        [
            name,
            m["mean"],
            m["low"],
            m["high"],
            "" if name == "funnel" else f"{differences[name]['mean']:+.4f}",
            "" if name == "funnel" else f"[{differences[name]['low']:+.4f}, {differences[name]['high']:+.4f}]",
            "" if name == "funnel" else ("yes" if differences[name]["significant"] else "no"),
        ]
        for name, m in models.items()
    ]
    confidence = next(iter(models.values()))["confidence"]
    return _section(
        "intervals",
        f"How sure: {intervals['metric']} with {confidence:.0%} bootstrap intervals",
        _p(
            f"{intervals['resamples']} resamples of the {summary['users']} test users, the same resamples for every "
            "model, so the candidate's differences are paired. A difference is significant when its interval "
            "excludes 0. The gate decides on the means (and margins); the intervals say how much to trust it."
        ),
        table(
            ["model", "mean", "low", "high", "funnel minus model", "interval of the difference", "significant"], rows
        ),
        _fig(figures, "gate_intervals"),
    )


def blessed_section(summary: dict) -> str:
    """The candidate against the last blessed model re-scored on today's test split (or why there is none)."""
    versus = summary["versus_last_blessed"]
    if versus is None:
        return _section(
            "versus-blessed",
            "Against the last blessed model",
            _p(
                "No model has been blessed before this run, so there is nothing to compare with stage by "
                "stage; the gate compared with the baselines only."
            ),
        )
    rows = []
    for stage_name, keys in (("retrieval", ("hit@20", "ndcg@20", "mrr")), ("funnel", ("hit@20", "ndcg@20", "mrr"))):
        for key in keys:
            new, old = versus[stage_name]["candidate"][key], versus[stage_name]["last_blessed"][key]
            rows.append([stage_name, key, new, old, f"{new - old:+.4f}"])
    ranker = versus["ranker"]
    for key in ("auc", "gauc"):
        new = (ranker["candidate"] or {}).get(key)
        old = (ranker["last_blessed"] or {}).get(key)
        rows.append(
            [
                "ranker",
                key,
                new if new is not None else "n/a",
                old if old is not None else "n/a",
                f"{new - old:+.4f}" if new is not None and old is not None else "n/a",
            ]
        )
    return _section(
        "versus-blessed",
        f"Against the last blessed model ({versus['version']}), stage by stage",
        _p("Both re-scored on today's test split."),
        table(["stage", "metric", "today", "last blessed", "change"], rows),
        _p(ranker["note"], "note") if ranker["note"] else "",
    )


def rankers_section(summary: dict, figures: dict[str, Plot]) -> str:
    """Each ranker's AUC, GAUC and logloss beside its funnel metrics, the candidate marked, with their curves."""
    rankers = summary["rankers"]
    candidate = summary["candidate_ranker"]
    metrics_by_name = summary["ranking_metrics"]
    rows = []
    for name, r in rankers.items():
        funnel = metrics_by_name.get("funnel" if name == candidate else f"funnel_{name}", {})
        rows.append(
            [
                f"{name} (candidate)" if name == candidate else name,
                *(
                    (r["auc"], "undefined" if r["gauc"] is None else r["gauc"], r["logloss"], r["rows"])
                    if r
                    else ("n/a",) * 4
                ),
                funnel.get("hit@20", "n/a"),
                funnel.get("ndcg@20", "n/a"),
            ]
        )
    ran = set(rankers)
    absent = [name for name in ("din", "dien_no_aux") if name not in ran]
    notes = (
        _p(
            "Not run in this pipeline: " + ", ".join(absent) + " (make bench trains DIEN without its auxiliary "
            "loss beside DIEN and DIN)."
        )
        if absent
        else ""
    )
    return _section(
        "rankers",
        "Rankers: the candidate against the rankers trained beside it",
        _p(
            "AUC, GAUC (per-user AUC weighted by impressions, as in the DIN paper) and logloss on the "
            "ranking test rows; the funnel's HIT@20 and NDCG@20 with each ranker behind the same "
            "retrieval. Only the candidate is gated and exported."
        ),
        table(["ranker", "AUC", "GAUC", "logloss", "rows", "funnel HIT@20", "funnel NDCG@20"], rows),
        notes,
        _fig(figures, "rankers", "roc"),
    )


def examples_section(summary: dict) -> str:
    """A few users' histories and the lists each model gives them, the actual next item in bold."""

    def items(entries, mark=False):
        hit = ' class="hit"'
        return (
            '<ol class="items">'
            + "".join(
                f"<li{hit if mark and e.get('is_next') else ''}>{html.escape(e['item_id'])} "
                f"<small>{html.escape(e['category'])}</small></li>"
                for e in entries
            )
            + "</ol>"
        )

    rows = "".join(
        f"<tr><td>{html.escape(e['user_id'])}<br><small>{e['history_length']} earlier items</small></td>"
        f"<td>{items(e['last_items'])}</td><td>{items(e['recommended'], True)}</td>"
        f"<td>{html.escape(e['next_item']['item_id'])} <small>{html.escape(e['next_item']['category'])}</small></td></tr>"
        for e in summary["examples"]
    )
    return _section(
        "examples",
        "Example lists",
        _p(
            "Test users from short to long histories: their last five items (oldest first), the funnel's "
            "top 10 in order (in bold where it holds the user's actual next item), and that next item; each item with "
            "its category. As evaluation scores it, items the user already had are hidden except the actual next item "
            "(a re-view can be hit), so a bold item may also be among the last items; served lists hide them all."
        ),
        f'<table class="examples"><tr><th>user</th><th>last items</th><th>recommended</th>'
        f"<th>actual next item</th></tr>{rows}</table>",
    )


def breakdowns_section(summary: dict, figures: dict[str, Plot]) -> str:
    """The funnel and baselines by user segment, history length, target popularity and target category."""
    parts = []
    titles = (
        ("segment", "User segments", "breakdown_segment"),
        ("history_length", "By history length", "breakdown_history"),
        ("target_popularity", "By target popularity", "breakdown_popularity"),
        ("target_category", "By target category", "breakdown_category"),
    )
    for key, title, fig_name in titles:
        t = summary["breakdowns"][key]
        names = [k for k in next(iter(t.values())) if k != "users"] if t else []
        header = ["model: HIT@20 / NDCG@20"] + [f"{b} ({e['users']} users)" for b, e in t.items()]
        rows = [[n] + [f"{e[n]['hit@20']:.4f} / {e[n]['ndcg@20']:.4f}" for e in t.values()] for n in names]
        parts.append(f"<h3>{html.escape(title)}</h3>" + table(header, rows, "breakdown") + _fig(figures, fig_name))
    stats = summary["list_statistics"]
    parts.append(
        "<h3>Coverage and popularity bias of top-20 lists</h3>"
        + table(
            ["model", "coverage@20", "arp@20 (mean train count)", "tail_share@20"],
            [[n, s["coverage@20"], s["arp@20"], s["tail_share@20"]] for n, s in stats.items()],
        )
        + _p(
            f"Test targets themselves: mean train count {summary['target_popularity']['arp']:.1f}, "
            f"tail share {summary['target_popularity']['tail_share']:.3f}."
        )
        + _fig(figures, "coverage")
    )
    return _section(
        "breakdowns",
        "Where models win or lose",
        _p(
            "Head, torso and tail items each make a third of training occurrences. Segments: new users "
            "have at most 2 earlier items, long histories at least 20."
        ),
        *parts,
    )


def ab_section(summary: dict, figures: dict[str, Plot]) -> str:
    """The A/B analysis of the logged outcomes per arm (or why it is not available), with the control-arm note."""
    off_policy = summary["off_policy"]
    ab = off_policy.get("ab") if not off_policy["unavailable"] else None
    if not ab:
        why = off_policy["unavailable"] or "the off-policy evaluation output holds no A/B analysis"
        return _section("ab", "A/B analysis", _p(f"Not available: {why}."), ab_control_note(summary))
    rows = [
        [
            arm,
            ab[arm]["users"],
            ab[arm]["impressions"],
            ab[arm]["clicks"],
            ab[arm]["purchases"],
            ab[arm]["ctr"],
            f"[{_cell(ab[arm]['ctr_low'])}, {_cell(ab[arm]['ctr_high'])}]",
            ab[arm]["cvr"],
            f"[{_cell(ab[arm]['cvr_low'])}, {_cell(ab[arm]['cvr_high'])}]",
        ]
        for arm in ("control", "treatment")
    ]
    srm = (
        "a sample-ratio mismatch: the split is broken, distrust the arms' difference"
        if ab["chi2_p"] < 0.001
        else "no sample-ratio mismatch"
    )
    tests = table(
        ["", "treatment minus control", "z", "p"],
        [[m.upper(), ab[f"{m}_diff"], ab[f"{m}_z"], ab[f"{m}_p"]] for m in ("ctr", "cvr")]
        + [["users per arm (SRM chi-square, 1 df)", "", ab["chi2"], ab["chi2_p"]]],
    )
    return _section(
        "ab",
        f"A/B analysis of the logged impressions (experiment {ab['experiment']})",
        _p(
            f"Users are hashed into arms as the export does (treatment ratio {ab['treatment_ratio']}); outcomes are the "
            f"impressions logged in the warehouse before this run, with {ab['confidence']:.0%} intervals (slots of one "
            f"request are correlated, so the intervals are somewhat narrow). SRM p = {ab['chi2_p']:.3f}: {srm}. On the "
            "synthetic shop (the only source with this study) one logging policy served both arms, so this is an A/A "
            "check: an arm difference here is noise or a broken split, not a model effect."
        ),
        table(
            ["arm", "users", "impressions", "clicks", "purchases", "CTR", "CTR interval", "CVR", "CVR interval"], rows
        ),
        tests,
        ab_control_note(summary),
        _fig(figures, "ab_arms"),
    )


def off_policy_section(off_policy: dict, figures: dict[str, str]) -> str:
    """The OPE table (logged click rate, truth, each estimator) and the bandit study, one sentence per row."""
    title = "Off-policy evaluation of the new ranker (logged impressions)"
    if off_policy["unavailable"]:
        return _section(
            "ope",
            title,
            _p(
                f"Not available: {off_policy['unavailable']}. Without these estimates the "
                "gate's off-policy condition is not applied, and there is no bandit study."
            ),
        )
    setup = off_policy["setup"]
    logged = off_policy["logged"]["click_rate"]

    def lift(value: float) -> str:
        return f"{value / logged - 1:+.1%}"

    rows = [
        ["logging policy, observed in the warehouse", logged, "", "", "", OPE_ROWS["logged"]],
        [
            "new ranker, true value (simulator)",
            off_policy["truth"],
            "",
            "",
            lift(off_policy["truth"]),
            OPE_ROWS["truth"],
        ],
    ]
    rows += [
        [name, e["estimate"], f"{e['bias']:+.4f}", e["rmse"], lift(e["estimate"]), OPE_ROWS.get(name, "")]
        for name, e in off_policy["estimators"].items()
    ]
    parts = [
        _p(
            f"Click rate per shown slot of the new ranker ({off_policy['target']}, explored with probability "
            f"{setup.get('epsilon')}), estimated by each estimator from {setup.get('repeats')} simulated logs of "
            f"{setup.get('requests_per_log')} requests each; the logging policy's rate is observed on "
            f"{off_policy['logged']['impressions']} logged impressions. Bias and RMSE are against the simulator's "
            "exact value of the new ranker on the same requests."
        ),
        table(["", "click rate", "bias", "RMSE", "vs logged", "what the row measures"], rows, "ope"),
    ]
    weighted = off_policy.get("weighted")
    if weighted:
        parts += [
            _p(
                f"The same estimators of the reward per slot under the weighting {weighted['reward_weighting']} "
                "(LINE's score when bandit_reward=score: a mute is worth less than a plain impression), against the "
                "simulator's truth under that weighting:"
            ),
            table(
                ["", "reward per slot", "bias", "RMSE"],
                [["new ranker, true value (simulator)", weighted["truth"], "", ""]]
                + [[n, e["estimate"], f"{e['bias']:+.4f}", e["rmse"]] for n, e in weighted["estimators"].items()],
                "ope-weighted",
            ),
        ]
    if off_policy.get("weights"):
        parts += [
            _p("Importance weights of the logged slots under the new ranker:"),
            table(list(off_policy["weights"]), [list(off_policy["weights"].values())]),
        ]
    if "ope_estimates" in figures:
        parts.append(
            figure(
                "ope_estimates",
                Plot(
                    figures["ope_estimates"],
                    "Each estimator's estimate on every simulated log (dots), mean \u00b1 RMSE (black), and the truth.",
                    {name: e["estimate"] for name, e in off_policy["estimators"].items()},
                ),
            )
        )
    bandit = {policy: v for policy, v in off_policy["bandit"].items() if "cumulative_reward" in v}
    if bandit:
        setup = off_policy["bandit"].get("setup", {})

        def over_seeds(values: dict, key: str):
            if key not in values:
                return ""
            spread = values.get("spread", {}).get(key)
            return f"{values[key]:.0f}" + (f" \u00b1{spread / 2:.0f}" if spread else "")

        keys = ("cumulative_reward", "after_shift_reward", "cumulative_score", "after_shift_score")
        parts += [
            "<h3>Bandit re-ranker in the simulator</h3>",
            _p(
                f"Medians over the simulator seeds {setup.get('seeds', [0])} (\u00b1 half the range over seeds); "
                f"the learners learn {setup.get('learning_reward', 'clicks')}. The score is LINE's: an impression "
                "counts 0.5, a click 1 and a mute 0."
            ),
            table(
                [
                    "policy",
                    "cumulative clicks",
                    "clicks after the interest shift",
                    "cumulative score",
                    "score after the shift",
                    "what the row measures",
                ],
                [[p, *(over_seeds(v, key) for key in keys), BANDIT_ROWS.get(p, "")] for p, v in bandit.items()],
                "bandit",
            ),
        ]
        if "bandit_curves" in figures:
            parts.append(
                figure(
                    "bandit_curves",
                    Plot(
                        figures["bandit_curves"],
                        "Cumulative clicks (top) and LINE score (bottom) of every policy on every seed (line style), "
                        "each one's gain over random, and the Bayesian FM minus linear Thompson and LinUCB on the "
                        "same seed; the dotted line is the shift in user interests.",
                        {p: v["cumulative_reward"] for p, v in bandit.items()},
                    ),
                )
            )
    return _section("ope", title, *parts)


def campaign_section(campaign: dict | None) -> str:
    """Complementary items (HIT@10 on held-out baskets) and audiences (precision and recall at 1% and 10% of the
    users, on the time split's test window): the campaign evaluation task's file (components.export.campaign_eval)."""
    if not campaign or "skipped" in campaign:  # the task writes {"skipped": why} when campaign_outputs is ""
        why = campaign["skipped"] if campaign else "the run names no campaign_outputs, or the evaluation had no extract"
        return _section("campaign", "Campaign outputs: complementary items and audiences", _p(f"Not evaluated: {why}."))
    parts = [_p(f"Split {campaign['split']}, cut {campaign['cut']}. " + campaign.get("caveat", ""))]
    comp = campaign.get("complementary_items")
    if comp:
        methods = [m for m, v in comp.items() if isinstance(v, dict)]
        parts.append(
            _p(
                f"Complementary items: {comp['queries']} queries from {comp['baskets']} held-out baskets (cart and "
                "purchase events of one session, or one day without sessions); a hit when another item of the "
                f"basket is in the item's top 10. Output = complementary ({comp.get('method')} with the retrieval "
                "model's next items for rare items); count, lift: co-occurrence alone; similar_items: the "
                "candidate embeddings' cosine; next_item_embedding: the fallback alone."
            )
        )
        parts.append(table(["method", "HIT@10"], [[m, comp[m]["hit@10"]] for m in methods]))
    aud = campaign.get("audiences")
    if aud:
        shares = list(aud["k"])
        methods = [m for m, v in aud.items() if isinstance(v, dict) and m not in ("k", "window")]
        targets = ", ".join(f"{t['target']} ({t['future_buyers']} buyers)" for t in aud["targets"])
        parts.append(
            _p(
                f"Audiences: {aud['users']} scored users, histories up to {aud['window']['history_end']}, future "
                f"buyers until {aud['window']['window_end']}; targets {targets}. K = "
                + ", ".join(f"{k} ({aud['k'][k]} users)" for k in shares)
                + ". ranker: DIEN's buy-or-not probability; funnel: fused with the retrieval score."
            )
        )
        header = ["method"] + [f"{m}@{k}" for k in shares for m in ("precision", "recall")]
        rows = [[m] + [aud[m].get(f"{x}@{k}", "") for k in shares for x in ("precision", "recall")] for m in methods]
        parts.append(table(header, rows))
    elif campaign.get("audiences_skipped"):
        parts.append(_p("Audiences: " + campaign["audiences_skipped"]))
    return _section("campaign", "Campaign outputs: complementary items and audiences", *parts)


def calibration_section(figures: dict[str, Plot]) -> str:
    """The ranker's calibration figure with its caveat; "" when the run measured no calibration."""
    if "calibration" not in figures:
        return ""
    return _section("calibration", "Ranker calibration", _p(CALIBRATION_CAVEAT, "note"), _fig(figures, "calibration"))


def render(summary: dict, figures: dict[str, Plot], off_policy_figures: dict[str, str] | None = None) -> str:
    """The page. `figures` come from plots.report_figures; `off_policy_figures` {name: base64 PNG} come
    ready-made from the off-policy evaluation stage."""
    metric_rows = [
        [name] + [values.get(m, "") for m in TABLE_METRICS] for name, values in summary["ranking_metrics"].items()
    ]
    sections = [
        metadata_section(summary["run_metadata"]),
        lineage_section(summary),
        _section("export", "Export depth", _p(summary["export_n_reason"])),
        intervals_section(summary, figures),
        blessed_section(summary),
        _section(
            "metrics",
            "Next-item metrics (test split)",
            _p(
                "HIT@K: the next item is in the top K; NDCG@K also rewards placing it high. funnel is the "
                "candidate (retrieval then its ranker); funnel_<ranker> the same retrieval with another ranker."
            ),
            table(["model"] + list(TABLE_METRICS), metric_rows),
            _fig(figures, "recall_at_k", "recall_vs_n"),
        ),
        rankers_section(summary, figures),
        _section(
            "training",
            "Training curves",
            _fig(figures, "training_curves") or _p("No stage recorded per-epoch figures."),
        ),
        examples_section(summary),
        breakdowns_section(summary, figures),
        ab_section(summary, figures),
        off_policy_section(summary["off_policy"], off_policy_figures or {}),
        campaign_section(summary.get("campaign")),
        calibration_section(figures),
    ]
    nav = (
        "<nav>"
        + "".join(
            f'<a href="#{a}">{t}</a>'
            for a, t in (
                ("run", "run"),
                ("lineage", "data"),
                ("intervals", "intervals"),
                ("versus-blessed", "vs blessed"),
                ("metrics", "metrics"),
                ("rankers", "rankers"),
                ("training", "training"),
                ("examples", "examples"),
                ("breakdowns", "breakdowns"),
                ("ab", "A/B"),
                ("ope", "off-policy"),
                ("campaign", "campaign"),
            )
        )
        + "</nav>"
    )
    title = html.escape(summary["model_version"])
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>Evaluation {title}</title>"
        f"<style>{STYLE}</style></head><body><h1>Evaluation report: model {title}</h1>{verdict(summary)}"
        f"{ab_control_note(summary)}{nav}{''.join(sections)}</body></html>"
    )
