"""The HTML report: one self-contained page (plots inlined as PNG) that says at a glance whether the
model was blessed and why, which N the export uses, where each model wins or loses, and what the
logged impressions say about the new ranker's click rate (off-policy estimates beside the truth)."""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from components import metrics

CURVE_KS = tuple(range(1, 51))
MODEL_COLOURS = {
    "funnel": "#1b9e77", "retrieval": "#7570b3", "item_to_item": "#d95f02",
    "popularity": "#999999", "last_blessed_funnel": "#e7298a",
}
TABLE_METRICS = ("hit@5", "hit@10", "hit@20", "hit@50", "ndcg@5", "ndcg@10", "ndcg@20", "ndcg@50", "mrr")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display in a pipeline container
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def hit_curves(ranks_by_model: dict[str, metrics.Ranks]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ranks in ranks_by_model.items():
        per_user = metrics.per_user_metrics(ranks, CURVE_KS)
        ax.plot(CURVE_KS, [per_user[f"hit@{k}"].mean() for k in CURVE_KS], label=name, color=MODEL_COLOURS.get(name))
    ax.set(xlabel="K (list length)", ylabel="HIT@K (recall of the next item)", title="Recall@K by model")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def recall_vs_n(retrieval: metrics.Ranks, funnel_by_n: dict[int, metrics.Ranks], export_n: int) -> str:
    """Retrieval's recall at depth N (the ceiling of the funnel) and the funnel's HIT@20 at each N."""
    plt = _pyplot()
    depths = sorted(funnel_by_n)
    ns = np.unique(np.linspace(1, max(depths), 60).astype(int))
    per_user = metrics.per_user_metrics(retrieval, tuple(int(n) for n in ns))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [per_user[f"hit@{n}"].mean() for n in ns], label="retrieval HIT@N (candidates hold the target)",
            color=MODEL_COLOURS["retrieval"])
    funnel_hit = [metrics.ranking_metrics(funnel_by_n[n], (20,))["hit@20"] for n in depths]
    ax.plot(depths, funnel_hit, "o-", label="funnel HIT@20 after re-ranking top-N", color=MODEL_COLOURS["funnel"])
    ax.axvline(export_n, linestyle="--", color="black", label=f"export N = {export_n}")
    ax.set(xlabel="N (retrieval candidates passed to the ranker)", ylabel="hit rate", title="Recall vs N")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def roc(labels: np.ndarray, probabilities: np.ndarray, auc: float) -> str:
    plt = _pyplot()
    fpr, tpr, _ = metrics.roc_curve(labels, probabilities)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, color=MODEL_COLOURS["funnel"], label=f"ranker (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Ranker ROC (test split)")
    ax.legend(loc="lower right")
    return _png(fig)


def calibration_table(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean prediction and observed positive rate per equal-width probability bin (non-empty bins)."""
    index = np.minimum((np.asarray(probabilities) * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            rows.append({"bin": b, "count": int(members.sum()), "predicted": float(probabilities[members].mean()),
                         "observed": float(labels[members].mean())})
    return rows


def calibration(labels: np.ndarray, probabilities: np.ndarray) -> str:
    plt = _pyplot()
    table = calibration_table(labels, probabilities)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    top.plot([r["predicted"] for r in table], [r["observed"] for r in table], "o-", color=MODEL_COLOURS["funnel"],
             label="ranker")
    top.set(ylabel="observed positive rate", title="Ranker calibration")
    top.legend()
    bottom.hist(probabilities, bins=20, range=(0, 1), color=MODEL_COLOURS["funnel"])
    bottom.set(xlabel="predicted probability", ylabel="rows")
    return _png(fig)


def breakdown_bars(table: dict[str, dict], title: str, metric: str = "hit@20") -> str:
    plt = _pyplot()
    buckets = list(table)
    names = [k for k in next(iter(table.values())) if k != "users"] if table else []
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ax.bar(np.arange(len(buckets)) + i * width, [table[b][name][metric] for b in buckets], width,
               label=name, color=MODEL_COLOURS.get(name))
    ax.set_xticks(np.arange(len(buckets)) + width * (len(names) - 1) / 2,
                  [f"{b}\n({table[b]['users']} users)" for b in buckets])
    ax.set(ylabel=metric.upper(), title=title)
    ax.legend(fontsize=8)
    return _png(fig)


def list_bars(list_stats: dict[str, dict]) -> str:
    plt = _pyplot()
    names = list(list_stats)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
    colours = [MODEL_COLOURS.get(n, "#444444") for n in names]
    left.bar(names, [list_stats[n]["coverage@20"] for n in names], color=colours)
    left.set(title="Catalogue coverage of top-20 lists", ylabel="share of catalogue shown")
    right.bar(names, [list_stats[n]["tail_share@20"] for n in names], color=colours)
    right.set(title="Tail items among shown slots", ylabel="share of slots")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    return _png(fig)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(name: str, png: str, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


OFF_POLICY_CAPTIONS = {
    "ope_estimates": "Each estimator's estimate on every simulated log (dots), mean \u00b1 RMSE (black), and the truth.",
    "bandit_curves": "Bandit study in the simulator: cumulative clicks of Thompson sampling, exploit, the new ranker's "
                     "own top K (greedy) and random choice; the dotted line is the shift in user interests.",
}


def off_policy_section(off_policy: dict, figures: dict[str, str]) -> list[str]:
    """The OPE table (logged click rate, truth, each estimator) and the experiments' figures, or why there are none."""
    title = "<h2>Off-policy evaluation of the new ranker (logged impressions)</h2>"
    if off_policy["unavailable"]:
        return [title, f"<p>Not available: {html.escape(off_policy['unavailable'])}. Without these estimates the "
                       "gate's off-policy condition is not applied, and there is no bandit study.</p>"]
    setup = off_policy["setup"]
    logged = off_policy["logged"]["click_rate"]

    def lift(value: float) -> str:
        return f"{value / logged - 1:+.1%}"

    rows = [["logging policy, observed in the warehouse", logged, "", "", ""],
            ["new ranker, true value (simulator)", off_policy["truth"], "", "", lift(off_policy["truth"])]]
    rows += [[name, e["estimate"], f"{e['bias']:+.4f}", e["rmse"], lift(e["estimate"])]
             for name, e in off_policy["estimators"].items()]
    parts = [
        title,
        f"<p>Click rate per shown slot of the new ranker ({html.escape(str(off_policy['target']))}, explored with "
        f"probability {setup.get('epsilon')}), estimated by each estimator from {setup.get('repeats')} simulated "
        f"logs of {setup.get('requests_per_log')} requests each; the logging policy's rate is observed on "
        f"{off_policy['logged']['impressions']} logged impressions. Bias and RMSE are against the simulator's "
        "exact value of the new ranker on the same requests.</p>",
        _table(["", "click rate", "bias", "RMSE", "vs logged"], rows),
    ]
    if off_policy.get("weights"):
        parts += ["<p>Importance weights of the logged slots under the new ranker:</p>",
                  _table(list(off_policy["weights"]), [list(off_policy["weights"].values())])]
    bandit = {policy: v for policy, v in off_policy["bandit"].items() if "cumulative_reward" in v}
    if bandit:
        parts += ["<h3>Bandit re-ranker in the simulator</h3>",
                  _table(["policy", "cumulative clicks", "clicks after the interest shift"],
                         [[p, round(v["cumulative_reward"]),
                           round(v["after_shift_reward"]) if "after_shift_reward" in v else ""]
                          for p, v in bandit.items()])]
    parts += [_figure(name, png, OFF_POLICY_CAPTIONS.get(name, name)) for name, png in figures.items()]
    return parts


def render(summary: dict, figures: dict[str, tuple[str, str]], off_policy_figures: dict[str, str] | None = None) -> str:
    """The page: verdict, export N, metric tables, off-policy estimates, then the figures {name: (png, caption)}.
    `off_policy_figures` {name: png} come ready-made from the off-policy evaluation stage."""
    gate = summary["gate"]
    verdict = "BLESSED" if gate["blessed"] else "NOT BLESSED"
    colour = "#1b9e77" if gate["blessed"] else "#d95f02"
    ranking_models = summary["ranking_metrics"]
    metric_rows = [[name] + [values.get(m, "") for m in TABLE_METRICS] for name, values in ranking_models.items()]
    sections = [
        f"<h1>Evaluation report: model {html.escape(summary['model_version'])}</h1>",
        f'<div class="verdict" style="border-color:{colour}"><h2 style="color:{colour}">{verdict}</h2>'
        + "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in gate["reasons"]) + "</ul>"
        + f"<p>Gate metric: funnel {html.escape(gate['metric'])} on {summary['users']} test users "
        f"(full catalogue of {summary['items']} items, earlier items masked).</p></div>",
        f"<h2>Export depth</h2><p>{html.escape(summary['export_n_reason'])}</p>",
        "<h2>Next-item metrics (test split)</h2>",
        _table(["model"] + list(TABLE_METRICS), metric_rows),
    ]
    if summary.get("ranker"):
        r = summary["ranker"]
        sections += ["<h2>Ranker</h2>", _table(["AUC", "GAUC", "logloss", "rows"],
                                               [[r["auc"], "undefined" if r["gauc"] is None else r["gauc"],
                                                 r["logloss"], r["rows"]]])]
    sections += off_policy_section(summary["off_policy"], off_policy_figures or {})
    stats = summary["list_statistics"]
    sections += [
        "<h2>Coverage and popularity bias of top-20 lists</h2>",
        _table(["model", "coverage@20", "arp@20 (mean train count)", "tail_share@20"],
               [[n, s["coverage@20"], s["arp@20"], s["tail_share@20"]] for n, s in stats.items()]),
        f"<p>Test targets themselves: mean train count {summary['target_popularity']['arp']:.1f}, "
        f"tail share {summary['target_popularity']['tail_share']:.3f}.</p>",
    ]
    for key, title in (("history_length", "HIT@20 by history length"), ("target_popularity", "HIT@20 by target popularity")):
        table = summary["breakdowns"][key]
        names = [k for k in next(iter(table.values())) if k != "users"] if table else []
        sections += [f"<h2>{title}</h2>",
                     _table(["bucket", "users"] + names, [[b, e["users"]] + [e[n]["hit@20"] for n in names]
                                                          for b, e in table.items()])]
    sections.append("<h2>Plots</h2>" + "".join(_figure(n, png, cap) for n, (png, cap) in figures.items()))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.verdict{border:3px solid;padding:4px 16px}"
             "figure{display:inline-block;margin:8px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation {html.escape(summary['model_version'])}</title><style>{style}</style></head><body>{''.join(sections)}</body></html>"
