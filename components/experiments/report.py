"""Figures and an HTML fragment the evaluation report embeds: bandit reward curves and OPE estimates vs truth.

Figures are built with matplotlib's object API (no pyplot state), so they are safe inside a pipeline process.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure

from components.experiments.ope import ESTIMATORS
from components.experiments.simulation import BanditRun

POLICY_STYLE = {"thompson": "tab:blue", "exploit": "tab:cyan", "greedy": "tab:orange", "random": "tab:gray"}


def bandit_figure(run: BanditRun) -> Figure:
    """Cumulative clicks per policy over rounds (left) and the per-round click rate, smoothed (right)."""
    fig = Figure(figsize=(10, 3.6))
    total, rate = fig.subplots(1, 2)
    rounds = np.arange(1, len(next(iter(run.rewards.values()))) + 1)
    window = max(1, len(rounds) // 30)
    for name, curve in run.cumulative().items():
        total.plot(rounds, curve, label=name, color=POLICY_STYLE.get(name))
        smooth = np.convolve(run.rewards[name], np.ones(window) / window, mode="valid")
        rate.plot(rounds[window - 1:], smooth, label=name, color=POLICY_STYLE.get(name))
    for axis in (total, rate):
        if run.shift_round is not None:
            axis.axvline(run.shift_round + 1, color="k", linestyle=":", label="interest shift")
        axis.set_xlabel(f"round ({run.batch_size} requests each)")
    total.set_ylabel("cumulative clicks")
    rate.set_ylabel(f"clicks per request (moving mean of {window})")
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


def png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_fragment(ope_result: dict | None, run: BanditRun | None) -> str:
    """A <section> with the OPE table and figures, for the evaluation report; parts without data are left out."""
    parts = ["<section class='experiments'><h2>Experiments</h2>"]
    if ope_result:
        rows = "".join(
            f"<tr><td>{name}</td><td>{ope_result[name]['estimate']:.4f}</td><td>{ope_result[name]['bias']:+.4f}</td>"
            f"<td>{ope_result[name]['rmse']:.4f}</td></tr>" for name in ESTIMATORS)
        parts.append(f"<h3>Off-policy evaluation (truth {ope_result['truth']:.4f}, {ope_result['repeats']} logs)</h3>"
                     f"<table><tr><th>estimator</th><th>estimate</th><th>bias</th><th>RMSE</th></tr>{rows}</table>"
                     f"<img alt='OPE estimates' src='data:image/png;base64,{png_base64(ope_figure(ope_result))}'/>")
    if run is not None:
        parts.append("<h3>Bandit re-ranker</h3>"
                     f"<img alt='{html.escape('cumulative reward')}' src='data:image/png;base64,{png_base64(bandit_figure(run))}'/>")
    parts.append("</section>")
    return "".join(parts)
