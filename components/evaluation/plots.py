"""The evaluation report's figures. Each is a `Plot`: the PNG (base64), its caption, and the numbers it draws,
which the report writes beside the image so that a reader (or a test) can check a figure against its data.

Built with matplotlib's object API (no pyplot state), so they are safe inside a pipeline process. Curves that
lie on top of each other get markers and a panel of differences; legends sit outside the bars they describe.
"""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
from matplotlib.figure import Figure

from components import metrics

CURVE_KS = tuple(range(1, 51))
MARKED_KS = (1, 5, 10, 20, 30, 40, 50)
BASE_COLOURS = {
    "funnel": "#1b9e77",
    "retrieval": "#7570b3",
    "item_to_item": "#d95f02",
    "popularity": "#999999",
    "last_blessed_funnel": "#e7298a",
}
EXTRA_COLOURS = ("#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b15928")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
CALIBRATION_CAVEAT = (
    "Rows are the ranking test rows: one sampled hard negative per positive (about 1:1), "
    "not the shop's real click or purchase rate, so the observed rate here is not a real rate."
)


@dataclasses.dataclass(frozen=True)
class Plot:
    png: str  # base64
    caption: str
    data: dict  # the numbers drawn, JSON-able


def colour(name: str, names: list[str] | None = None) -> str:
    """A model's colour, the same in every figure: the base models have their own, others take the extra ones in
    order."""
    if name in BASE_COLOURS:
        return BASE_COLOURS[name]
    extra = [n for n in (names or [name]) if n not in BASE_COLOURS]
    return EXTRA_COLOURS[extra.index(name) % len(EXTRA_COLOURS)] if name in extra else EXTRA_COLOURS[0]


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def hit_curves(ranks_by_model: dict[str, metrics.Ranks]) -> Plot:
    """HIT@K per model (markers at a few K), and below each model's difference to the candidate funnel, where
    models with nearly equal curves (the funnel and retrieval alone) can be told apart."""
    names = list(ranks_by_model)
    curves = {}
    for name, ranks in ranks_by_model.items():
        per_user = metrics.per_user_metrics(ranks, CURVE_KS)
        curves[name] = [float(per_user[f"hit@{k}"].mean()) for k in CURVE_KS]
    fig = Figure(figsize=(7, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    marked = [k - 1 for k in MARKED_KS]
    for i, name in enumerate(names):
        style = dict(color=colour(name, names), marker=MARKERS[i % len(MARKERS)], markevery=marked, label=name)
        top.plot(CURVE_KS, curves[name], **style)
        if name != "funnel":
            bottom.plot(CURVE_KS, np.subtract(curves[name], curves["funnel"]), **style)
    bottom.axhline(0, color=colour("funnel"), linewidth=2, label="funnel (reference)")
    top.set(ylabel="HIT@K (next item in the top K)", title="HIT@K by model (test users)")
    bottom.set(xlabel="K (list length)", ylabel="HIT@K minus the funnel's")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return Plot(
        _png(fig),
        "HIT@K for K = 1..50, every model on the same users; below, each model minus the "
        "candidate funnel (above 0: better than the funnel).",
        {"k": list(CURVE_KS), "hit": curves},
    )


def recall_vs_n(retrieval: metrics.Ranks, funnel_by_n: dict[int, metrics.Ranks], export_n: int) -> Plot:
    """Retrieval's recall at depth N (the funnel's ceiling) and the funnel's HIT@20 at each N, on a log N axis."""
    depths = sorted(funnel_by_n)
    ns = np.unique(np.geomspace(1, max(depths), 40).astype(int))
    per_user = metrics.per_user_metrics(retrieval, tuple(int(n) for n in ns))
    ceiling = [float(per_user[f"hit@{n}"].mean()) for n in ns]
    funnel_hit = [float(metrics.ranking_metrics(funnel_by_n[n], (20,))["hit@20"]) for n in depths]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(
        ns, ceiling, "s-", markersize=3, label="retrieval HIT@N (candidates hold the target)", color=colour("retrieval")
    )
    ax.plot(depths, funnel_hit, "o-", label="funnel HIT@20 after re-ranking the top N", color=colour("funnel"))
    ax.axvline(export_n, linestyle="--", color="black", label=f"export N = {export_n}")
    ax.set_xscale("log")
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= max(depths)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set(xlabel="N (retrieval candidates passed to the ranker, log scale)", ylabel="hit rate", title="Recall vs N")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return Plot(
        _png(fig),
        "How many retrieval candidates the ranker needs; the dashed line is the export's N.",
        {
            "n": [int(n) for n in ns],
            "retrieval_hit_at_n": ceiling,
            "funnel_n": depths,
            "funnel_hit@20": funnel_hit,
            "export_n": export_n,
        },
    )


def breakdown_bars(table: dict[str, dict], title: str, metrics_shown=("hit@20", "ndcg@20")) -> Plot:
    """Grouped bars per bucket, one panel per metric, the legend to the right of the panels."""
    buckets = list(table)
    names = [k for k in next(iter(table.values())) if k != "users"] if table else []
    fig = Figure(figsize=(max(7.0, 1.1 * len(buckets) + 4), 2.6 * len(metrics_shown)))
    axes = np.atleast_1d(fig.subplots(len(metrics_shown), 1, sharex=True))
    width = 0.8 / max(len(names), 1)
    data = {"buckets": buckets, "users": [table[b]["users"] for b in buckets]}
    for ax, metric in zip(axes, metrics_shown):
        data[metric] = {name: [table[b][name][metric] for b in buckets] for name in names}
        for i, name in enumerate(names):
            ax.bar(
                np.arange(len(buckets)) + i * width, data[metric][name], width, label=name, color=colour(name, names)
            )
        ax.set(ylabel=metric.upper())
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title(title)
    axes[-1].set_xticks(
        np.arange(len(buckets)) + width * (len(names) - 1) / 2,
        [f"{b}\n({table[b]['users']} users)" for b in buckets],
        fontsize=8,
    )
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return Plot(_png(fig), title, data)


def list_bars(list_stats: dict[str, dict]) -> Plot:
    """The list-statistics figure: catalogue coverage of each model's top-20 lists beside its share of tail items."""
    names = list(list_stats)
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    colours = [colour(n, names) for n in names]
    data = {
        "models": names,
        "coverage@20": [list_stats[n]["coverage@20"] for n in names],
        "tail_share@20": [list_stats[n]["tail_share@20"] for n in names],
    }
    left.bar(names, data["coverage@20"], color=colours)
    left.set(title="Catalogue coverage of top-20 lists", ylabel="share of catalogue shown", xlabel="model")
    right.bar(names, data["tail_share@20"], color=colours)
    right.set(title="Tail items among shown slots", ylabel="share of slots", xlabel="model")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    return Plot(_png(fig), "How much of the catalogue the top-20 lists reach, and how much of it is tail.", data)


def roc(rankers: dict[str, dict]) -> Plot:
    """Every ranker's ROC on the same ranking test rows."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    data = {}
    for i, (name, ranker) in enumerate(rankers.items()):
        fpr, tpr, _ = metrics.roc_curve(ranker["labels"], ranker["probabilities"])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(200, len(fpr))).astype(int))
        ax.plot(
            fpr[keep],
            tpr[keep],
            color=EXTRA_COLOURS[i % len(EXTRA_COLOURS)] if i else colour("funnel"),
            label=f"{name} (AUC {ranker['metrics']['auc']:.3f})",
        )
        data[name] = {"auc": ranker["metrics"]["auc"]}
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Ranker ROC (ranking test rows)")
    ax.legend(loc="lower right", fontsize=8)
    return Plot(
        _png(fig), "ROC of each ranker on the ranking test rows (the next item against one sampled negative).", data
    )


def calibration_table(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean prediction and observed positive rate per equal-width probability bin (non-empty bins)."""
    index = np.minimum((np.asarray(probabilities) * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            rows.append(
                {
                    "bin": b,
                    "count": int(members.sum()),
                    "predicted": float(probabilities[members].mean()),
                    "observed": float(labels[members].mean()),
                }
            )
    return rows


def calibration(name: str, labels: np.ndarray, probabilities: np.ndarray) -> Plot:
    """The ranker's calibration on 1:1 sampled rows: observed against predicted rate, with the rows per bin below."""
    table = calibration_table(labels, probabilities)
    fig = Figure(figsize=(5.5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    top.plot([r["predicted"] for r in table], [r["observed"] for r in table], "o-", color=colour("funnel"), label=name)
    top.set(ylabel="observed positive rate (1:1 rows)", title=f"{name} calibration on 1:1 sampled rows")
    top.text(
        0.02,
        0.97,
        f"positives are {np.mean(labels):.0%} of these rows:\nnot a real click or purchase rate",
        transform=top.transAxes,
        va="top",
        fontsize=8,
        bbox={"facecolor": "#fff3cd", "edgecolor": "#d9a400"},
    )
    top.legend(loc="lower right", fontsize=8)
    bottom.hist(probabilities, bins=20, range=(0, 1), color=colour("funnel"))
    bottom.set(xlabel="predicted probability", ylabel="rows")
    return Plot(
        _png(fig),
        f"Predicted probability against the observed positive rate, 10 bins. {CALIBRATION_CAVEAT}",
        {"bins": table, "positive_share": float(np.mean(labels))},
    )


def training_curves(curves: dict[str, dict]) -> Plot:
    """Per model, the training loss and the valid metric per epoch (one row of two panels per model)."""
    fig = Figure(figsize=(9, 2.8 * len(curves)))
    axes = np.asarray(fig.subplots(len(curves), 2, squeeze=False))
    for (loss_ax, valid_ax), (name, curve) in zip(axes, curves.items()):
        if curve["loss"]:
            epochs = np.arange(1, len(curve["loss"]) + 1)
            loss_ax.plot(epochs, curve["loss"], "o-", color="#444444")
        loss_ax.set(title=f"{name}: training loss", xlabel="epoch", ylabel="mean batch loss")
        for i, (metric, values) in enumerate(curve["valid"].items()):
            valid_ax.plot(np.arange(1, len(values) + 1), values, MARKERS[i] + "-", label=metric, color=EXTRA_COLOURS[i])
        valid_ax.set(title=f"{name}: valid metric", xlabel="epoch", ylabel="valid " + "/".join(curve["valid"]))
        valid_ax.legend(fontsize=8)
        for ax in (loss_ax, valid_ax):
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return Plot(
        _png(fig),
        "Training curves as each stage recorded them; retrieval and the rankers keep the weights "
        "of their best valid epoch. DIEN's loss includes its auxiliary loss, so it is not comparable with "
        "DIN's; retrieval's is the in-batch softmax loss.",
        curves,
    )


def gate_intervals(intervals: dict) -> Plot:
    """The gate metric's bootstrap interval per model."""
    models = intervals["models"]
    names = list(models)
    fig = Figure(figsize=(7, 0.6 * len(names) + 1.5))
    ax = fig.subplots()
    for y, name in enumerate(names):
        m = models[name]
        ax.errorbar(
            m["mean"],
            y,
            xerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]],
            fmt="o",
            capsize=5,
            color=colour(name, names),
        )
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    confidence = next(iter(models.values()))["confidence"] if models else 0.95
    ax.set(
        xlabel=f"test {intervals['metric']} ({confidence:.0%} bootstrap interval over users)",
        title=f"Gate metric {intervals['metric']} with intervals",
    )
    ax.grid(alpha=0.3, axis="x")
    return Plot(
        _png(fig),
        f"Mean and {confidence:.0%} interval of {intervals['metric']} from {intervals['resamples']} "
        "resamples of the test users.",
        models,
    )


def ranker_comparison(rankers: dict[str, dict | None], funnels: dict[str, dict]) -> Plot:
    """AUC and GAUC of each ranker (left) and the funnel's HIT@20 / NDCG@20 with each ranker (right)."""
    names = [n for n, r in rankers.items() if r]
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    width = 0.8 / max(len(names), 1)
    data = {
        "rankers": names,
        "auc": [rankers[n]["auc"] for n in names],
        "gauc": [rankers[n]["gauc"] for n in names],
        "funnels": funnels,
    }
    for i, name in enumerate(names):
        values = [rankers[name]["auc"], rankers[name]["gauc"] or 0.0]
        bars = left.bar(np.arange(2) + i * width, values, width, label=name, color=EXTRA_COLOURS[i])
        left.bar_label(bars, fmt="%.3f", fontsize=7)
        funnel = funnels.get(name)
        if funnel:
            bars = right.bar(
                np.arange(2) + i * width,
                [funnel["hit@20"], funnel["ndcg@20"]],
                width,
                label=name,
                color=EXTRA_COLOURS[i],
            )
            right.bar_label(bars, fmt="%.3f", fontsize=7)
    left.axhline(0.5, linestyle=":", color="grey", label="chance")
    left.set_xticks(np.arange(2) + width * (len(names) - 1) / 2, ["AUC", "GAUC"])
    left.set(title="Rankers on the ranking test rows", ylabel="area under the ROC curve", ylim=(0.0, 1.05))
    right.set_xticks(np.arange(2) + width * (len(names) - 1) / 2, ["HIT@20", "NDCG@20"])
    right.set(title="Funnel with each ranker (same retrieval)", ylabel="test metric")
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return Plot(
        _png(fig),
        "The candidate ranker against the rankers trained beside it: AUC and GAUC on the same "
        "rows, and the funnel's quality with each behind the same retrieval.",
        data,
    )


def ab_arms(ab: dict) -> Plot:
    """CTR and CVR per arm with their intervals."""
    fig = Figure(figsize=(8, 3.4))
    axes = fig.subplots(1, 2)
    arms = ("control", "treatment")
    data = {}
    for ax, metric in zip(axes, ("ctr", "cvr")):
        values = [ab[a][metric] or 0.0 for a in arms]
        low = [v - (ab[a][f"{metric}_low"] or v) for a, v in zip(arms, values)]
        high = [(ab[a][f"{metric}_high"] or v) - v for a, v in zip(arms, values)]
        ax.bar(arms, values, yerr=[low, high], capsize=6, color=["#999999", "#1b9e77"])
        ax.set(title=f"{metric.upper()} per arm", ylabel=metric.upper(), xlabel="arm")
        data[metric] = dict(zip(arms, values))
    return Plot(
        _png(fig),
        f"CTR (clicks per impression) and CVR (purchases per click) with {ab['confidence']:.0%} intervals.",
        data,
    )


def report_figures(
    summary: dict, ranks_by_model: dict[str, metrics.Ranks], candidate_scores, export_n: int, rankers: dict[str, dict]
) -> dict[str, Plot]:
    """Every figure of the report, from the summary and what evaluation holds in memory."""
    breakdown = summary["breakdowns"]
    figures = {
        "gate_intervals": gate_intervals(summary["gate_intervals"]),
        "recall_at_k": hit_curves(ranks_by_model),
        "recall_vs_n": recall_vs_n(candidate_scores.retrieval, candidate_scores.funnel_by_n, export_n),
        "breakdown_history": breakdown_bars(breakdown["history_length"], "By history length (earlier items)"),
        "breakdown_segment": breakdown_bars(breakdown["segment"], "By user segment"),
        "breakdown_popularity": breakdown_bars(breakdown["target_popularity"], "By target popularity"),
        "breakdown_category": breakdown_bars(breakdown["target_category"], "By target category"),
        "coverage": list_bars(summary["list_statistics"]),
    }
    if summary["training_curves"]:
        figures["training_curves"] = training_curves(summary["training_curves"])
    if rankers:
        candidate = summary["candidate_ranker"]
        funnels = {
            name: summary["ranking_metrics"]["funnel" if name == candidate else f"funnel_{name}"]
            for name in rankers
            if ("funnel" if name == candidate else f"funnel_{name}") in summary["ranking_metrics"]
        }
        figures["rankers"] = ranker_comparison(summary["rankers"], funnels)
        figures["roc"] = roc(rankers)
        if candidate in rankers:
            figures["calibration"] = calibration(
                candidate, rankers[candidate]["labels"], rankers[candidate]["probabilities"]
            )
    ab = summary["off_policy"].get("ab") or {}
    if ab.get("control"):
        figures["ab_arms"] = ab_arms(ab)
    return figures
