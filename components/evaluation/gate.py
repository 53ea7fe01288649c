"""The blessing gate: the candidate funnel must beat the strongest baseline of the run and the last
blessed model (re-scored on today's test split) by configurable margins on one chosen metric.

Optionally (`use_ope`) it also asks the logged impressions: the new ranker's off-policy estimate of its
click rate per shown slot must not fall below the logging policy's observed click rate by more than
`ope_margin` (relative). Offline next-item metrics and click rates can disagree, and the second is what
the shop earns from. Data without impressions has no estimate: the condition is then not applied, and
the decision says so instead of failing.
"""

from __future__ import annotations

import dataclasses

from components.schema import OPE_ESTIMATORS

DEFAULT_BASELINES = ("popularity", "item_to_item")
# RMSE against the simulator's truth, 20 logs each (MRDR / SNIPS / DR / IPS): medium preset, linear stand-in ranker
# 0.036 / 0.050 / 0.055 / 0.065; default preset, linear stand-in 0.015 / 0.011 / 0.014 / 0.021; default preset, the
# pipeline's DIEN ranker 0.0099 / 0.0090 / 0.0100 / 0.0135. MRDR has the lowest worst case and, like DR, stays
# unbiased when its reward model is wrong (DM does not); SNIPS wins on the default shop by a little.
DEFAULT_OPE_ESTIMATOR = "mrdr"


@dataclasses.dataclass(frozen=True)
class GateConfig:
    metric: str = "ndcg@20"  # a key of the funnel metrics: hit@K, ndcg@K or mrr
    baselines: tuple[str, ...] = DEFAULT_BASELINES  # the strongest of these must be beaten
    margin_vs_baseline: float = 0.0  # relative: beat reference * (1 + margin)
    margin_vs_blessed: float = 0.0
    use_ope: bool = False  # also require the OPE condition (when the data has impressions)
    ope_estimator: str = DEFAULT_OPE_ESTIMATOR
    ope_margin: float = 0.0  # relative: estimate >= logged click rate * (1 - margin)
    use_drift: bool = False  # also require no data drift against the last blessed run (features' data checks)

    def __post_init__(self):
        if not self.baselines:
            raise ValueError("the gate needs at least one baseline to compare with")
        if min(self.margin_vs_baseline, self.margin_vs_blessed) <= -1:
            raise ValueError("margins are relative and must be greater than -1")
        if self.ope_estimator not in OPE_ESTIMATORS:
            raise ValueError(f"ope_estimator must be one of {OPE_ESTIMATORS}, got {self.ope_estimator!r}")
        if not 0 <= self.ope_margin < 1:
            raise ValueError(f"ope_margin is a relative tolerance in [0, 1), got {self.ope_margin}")


@dataclasses.dataclass(frozen=True)
class OffPolicyEvidence:
    """What the gate reads from off-policy evaluation: estimates of the new ranker's click rate per slot and the
    logging policy's observed click rate, or (`unavailable`) why there are none."""

    estimates: dict[str, float] = dataclasses.field(default_factory=dict)
    logged_click_rate: float | None = None
    unavailable: str = ""


@dataclasses.dataclass(frozen=True)
class Comparison:
    against: str
    reference: float
    required: float
    passed: bool
    metric: str
    candidate: float
    strict: bool = True  # candidate > required; else candidate >= required
    # bootstrap over test users (bootstrap.Difference.to_json): the candidate minus the reference, with its interval
    difference: dict | None = None

    @property
    def reason(self) -> str:
        """The report's line for this comparison: PASS or FAIL, the candidate's value, the bar and what set it."""
        above, below = (">", "<=") if self.strict else (">=", "<")
        text = (
            f"{'PASS' if self.passed else 'FAIL'}: candidate {self.metric} {self.candidate:.4f} "
            f"{above if self.passed else below} {self.required:.4f} required against {self.against} "
            f"({self.reference:.4f})"
        )
        if self.difference:
            d = self.difference
            text += (
                f"; difference {d['mean']:+.4f}, {d['confidence']:.0%} bootstrap interval over test users "
                f"[{d['low']:+.4f}, {d['high']:+.4f}]: "
                + ("significant" if d["significant"] else "not significant (the interval holds 0)")
            )
        return text


@dataclasses.dataclass(frozen=True)
class GateDecision:
    blessed: bool
    metric: str
    candidate: float
    comparisons: tuple[Comparison, ...]
    notes: tuple[str, ...] = ()  # what the gate did not apply, and why

    @property
    def reasons(self) -> list[str]:
        """One sentence per comparison, then the notes, for the report and the logs."""
        return [c.reason for c in self.comparisons] + list(self.notes)

    def to_json(self) -> dict:
        """The gate as the summary's JSON, which the report and the bench read."""
        return {
            "blessed": self.blessed,
            "metric": self.metric,
            "candidate": self.candidate,
            "comparisons": [dataclasses.asdict(c) for c in self.comparisons],
            "notes": list(self.notes),
            "reasons": self.reasons,
        }


def _compare(
    candidate: float, metric: str, against: str, reference: float, margin: float, difference: dict | None = None
) -> Comparison:
    required = reference * (1 + margin)
    return Comparison(
        against=against,
        reference=reference,
        required=required,
        passed=candidate > required,
        metric=metric,
        candidate=candidate,
        difference=difference,
    )


def _ope_comparison(evidence: OffPolicyEvidence, config: GateConfig) -> Comparison:
    if config.ope_estimator not in evidence.estimates:
        raise ValueError(
            f"off-policy evaluation has no {config.ope_estimator!r} estimate; it has {sorted(evidence.estimates)}"
        )
    if evidence.logged_click_rate is None:
        raise ValueError("off-policy evaluation ran but reports no logged click rate to compare with")
    estimate = evidence.estimates[config.ope_estimator]
    required = evidence.logged_click_rate * (1 - config.ope_margin)
    return Comparison(
        against="the logging policy's observed click rate",
        reference=evidence.logged_click_rate,
        required=required,
        passed=estimate >= required,
        metric=f"click rate ({config.ope_estimator} OPE)",
        candidate=estimate,
        strict=False,
    )


def _off_policy(evidence: OffPolicyEvidence | None, config: GateConfig) -> tuple[list[Comparison], list[str]]:
    """The OPE comparison when the gate uses it and there is evidence; otherwise a note saying why not."""
    if evidence is None or evidence.unavailable:
        why = evidence.unavailable if evidence else "the pipeline passed no off-policy evaluation output"
        if config.use_ope:
            return [], [f"NOT APPLIED: the off-policy condition (gate_on_ope) has no estimate, because {why}."]
        return [], []
    comparison = _ope_comparison(evidence, config)
    if config.use_ope:
        return [comparison], []
    return [], [f"INFO (gate_on_ope is off, so not applied): {comparison.reason}."]


def decide(
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    last_blessed: dict[str, float] | None,
    config: GateConfig,
    off_policy: OffPolicyEvidence | None = None,
    differences: dict[str, dict] | None = None,
    drift_warnings: list[str] | None = None,
) -> GateDecision:
    """Blessed iff the candidate's metric strictly exceeds every required value (and, with use_ope and
    evidence, its OPE estimate reaches the required click rate). `differences` {baseline name or
    "last_blessed_funnel": bootstrap difference} puts the interval of each difference beside its comparison; it
    informs the reader and does not change the decision (a margin does that). `drift_warnings` (the data checks'
    drift against the last blessed run) refuse the blessing with use_drift, and are a warning note without."""
    differences = differences or {}
    if config.metric not in candidate:
        raise ValueError(f"gate metric {config.metric!r} is not among the candidate's metrics {sorted(candidate)}")
    missing = [b for b in config.baselines if b not in baselines]
    if missing:
        raise ValueError(f"gate baseline(s) {missing} were not evaluated; have {sorted(baselines)}")
    strongest = max(config.baselines, key=lambda b: baselines[b][config.metric])
    value = candidate[config.metric]
    comparisons = [
        _compare(
            value,
            config.metric,
            f"baseline {strongest} (strongest)",
            baselines[strongest][config.metric],
            config.margin_vs_baseline,
            differences.get(strongest),
        )
    ]
    if last_blessed is not None:
        comparisons.append(
            _compare(
                value,
                config.metric,
                "last blessed model",
                last_blessed[config.metric],
                config.margin_vs_blessed,
                differences.get("last_blessed_funnel"),
            )
        )
    ope_comparisons, notes = _off_policy(off_policy, config)
    comparisons += ope_comparisons
    drifted = bool(drift_warnings)
    for warning in drift_warnings or []:
        if config.use_drift:
            notes.append(f"FAIL (gate_on_drift): data {warning}.")
        else:
            notes.append(f"WARNING (gate_on_drift is off, so not applied): data {warning}.")
    return GateDecision(
        blessed=all(c.passed for c in comparisons) and not (config.use_drift and drifted),
        metric=config.metric,
        candidate=value,
        comparisons=tuple(comparisons),
        notes=tuple(notes),
    )
