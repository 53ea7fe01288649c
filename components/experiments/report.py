"""Figures the evaluation report embeds: bandit reward curves and OPE estimates vs truth. The evaluation report is
the one page a reader opens for them; this stage writes the PNGs and ope.json it reads.

Figures are built with matplotlib's object API (no pyplot state), so they are safe inside a pipeline process.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from components.experiments.ope import ESTIMATORS
from components.experiments.simulation import BanditRun

POLICY_STYLE = {
    "bayesian_fm": ("tab:red", "D"),
    "thompson": ("tab:blue", "o"),
    "linucb": ("tab:green", "v"),
    "exploit": ("tab:cyan", "s"),
    "greedy": ("tab:orange", "^"),
    "random": ("tab:gray", "x"),
}
SEED_STYLES = ("-", "--", ":", "-.")
MEASURE_LABEL = {"clicks": "clicks", "score": "LINE score (impression 0.5, click 1, mute 0)"}


def bandit_figure(runs: BanditRun | list[BanditRun]) -> Figure:
    """Per reward (rows: clicks, LINE's score) and for every policy and seed (line style = seed): cumulative reward
    over rounds (left), minus random's on the same seed (middle), and the Bayesian FM's minus linear Thompson's and
    LinUCB's, paired by seed (right): the learners differ by a few percent, so the right panels tell them apart."""
    runs = [runs] if isinstance(runs, BanditRun) else list(runs)
    measures = [
        m for m in ("clicks", "score") if all(getattr(r, "rewards" if m == "clicks" else "scores") for r in runs)
    ]
    fig = Figure(figsize=(15, 3.8 * len(measures)))
    axes = np.atleast_2d(fig.subplots(len(measures), 3))
    for row, measure in zip(axes, measures):
        total, gain, paired = row
        label = MEASURE_LABEL[measure]
        for index, run in enumerate(runs):
            cumulative = run.cumulative(measure)
            rounds = np.arange(1, len(next(iter(cumulative.values()))) + 1)
            every = max(1, len(rounds) // 10)
            line = SEED_STYLES[index % len(SEED_STYLES)]
            for name, curve in cumulative.items():
                colour, marker = POLICY_STYLE.get(name, ("k", "."))
                style = {"color": colour, "marker": marker, "markevery": every, "markersize": 4, "linestyle": line}
                style.update(linewidth=1, label=name if index == 0 else None)
                total.plot(rounds, curve, **style)
                if name != "random" and "random" in cumulative:
                    gain.plot(rounds, curve - cumulative["random"], **style)
            for other in ("thompson", "linucb"):
                if "bayesian_fm" in cumulative and other in cumulative:
                    paired.plot(
                        rounds,
                        cumulative["bayesian_fm"] - cumulative[other],
                        color=POLICY_STYLE[other][0],
                        linestyle=line,
                        label=f"bayesian_fm minus {other}" if index == 0 else None,
                    )
        paired.axhline(0, color="k", linewidth=1)
        gain.axhline(0, color="tab:gray", linewidth=1)
        for axis in row:
            if runs[0].shift_round is not None:
                axis.axvline(runs[0].shift_round + 1, color="k", linestyle=":", linewidth=1)
            axis.set_xlabel(f"round ({runs[0].batch_size} requests each)")
            axis.grid(alpha=0.3)
        total.set(
            ylabel=f"cumulative {measure}",
            title=f"Cumulative {label}",
        )
        gain.set(ylabel=f"cumulative {measure} minus random's", title="Gain over random choice")
        paired.set(ylabel=f"cumulative {measure}, FM minus other", title="Bayesian FM vs the linear bandits")
        total.title.set_fontsize(9)
        total.legend(fontsize=7)
        paired.legend(fontsize=7)
    seeds = ", ".join(str(r.seed) for r in runs)
    fig.suptitle(
        f"Seeds {seeds} (line styles solid, dashed, dotted); dotted vertical line: the interest shift; "
        f"the learners learn {runs[0].learning_reward}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def ope_figure(ope_result: dict) -> Figure:
    """Each estimator's per-repeat estimates beside the truth (the dashed line)."""
    fig = Figure(figsize=(6, 3.4))
    axis = fig.subplots()
    for x, name in enumerate(ESTIMATORS):
        values = ope_result[name]["per_repeat"]
        axis.scatter(np.full(len(values), x), values, s=12, alpha=0.7)
        axis.errorbar(x, ope_result[name]["estimate"], yerr=ope_result[name]["rmse"], fmt="o", color="k", capsize=4)
    axis.axhline(ope_result["truth"], linestyle="--", color="tab:red", label="truth")
    axis.set_xticks(range(len(ESTIMATORS)), ESTIMATORS)
    axis.set_ylabel("click rate per slot")
    axis.set_title(f"estimates of {ope_result['repeats']} logs; black: mean \u00b1 RMSE", fontsize=9)
    axis.legend(fontsize=8)
    fig.tight_layout()
    return fig
