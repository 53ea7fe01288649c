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
    "thompson": ("tab:blue", "o"),
    "exploit": ("tab:cyan", "s"),
    "greedy": ("tab:orange", "^"),
    "random": ("tab:gray", "x"),
}


def bandit_figure(run: BanditRun) -> Figure:
    """Cumulative clicks per policy over rounds (left), each policy's cumulative clicks minus random's (middle), and
    Thompson minus exploit (right): the two bandits differ by a fraction of a percent, so their curves lie on top of
    each other in the first two panels and only the third tells them apart."""
    fig = Figure(figsize=(14, 3.8))
    total, gain, explore = fig.subplots(1, 3)
    cumulative = run.cumulative()
    rounds = np.arange(1, len(next(iter(cumulative.values()))) + 1)
    every = max(1, len(rounds) // 10)
    for name, curve in cumulative.items():
        colour, marker = POLICY_STYLE.get(name, ("k", "."))
        style = dict(label=name, color=colour, marker=marker, markevery=every, markersize=5)
        total.plot(rounds, curve, **style)
        if name != "random" and "random" in cumulative:
            gain.plot(rounds, curve - cumulative["random"], **style)
    if "thompson" in cumulative and "exploit" in cumulative:
        explore.plot(
            rounds,
            cumulative["thompson"] - cumulative["exploit"],
            color=POLICY_STYLE["thompson"][0],
            marker="o",
            markevery=every,
            markersize=5,
            label="thompson minus exploit",
        )
        explore.axhline(0, color=POLICY_STYLE["exploit"][0], linewidth=1)
    explore.set(ylabel="cumulative clicks, thompson minus exploit", title="What exploring adds")
    for axis in (total, gain, explore):
        if run.shift_round is not None:
            axis.axvline(run.shift_round + 1, color="k", linestyle=":", label="interest shift")
        axis.set_xlabel(f"round ({run.batch_size} requests each)")
        axis.grid(alpha=0.3)
    total.set(ylabel="cumulative clicks", title="Cumulative clicks per policy")
    gain.set(ylabel="cumulative clicks minus random's", title="Gain over random choice")
    gain.axhline(0, color="tab:gray", linewidth=1)
    total.legend(fontsize=8)
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
