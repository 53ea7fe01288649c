"""The blessing gate: the candidate funnel must beat the strongest baseline of the run and the last
blessed model (re-scored on today's test split) by configurable margins on one chosen metric."""
from __future__ import annotations

import dataclasses

DEFAULT_BASELINES = ("popularity", "item_to_item")


@dataclasses.dataclass(frozen=True)
class GateConfig:
    metric: str = "ndcg@20"  # a key of the funnel metrics: hit@K, ndcg@K or mrr
    baselines: tuple[str, ...] = DEFAULT_BASELINES  # the strongest of these must be beaten
    margin_vs_baseline: float = 0.0  # relative: beat reference * (1 + margin)
    margin_vs_blessed: float = 0.0

    def __post_init__(self):
        if not self.baselines:
            raise ValueError("the gate needs at least one baseline to compare with")
        if min(self.margin_vs_baseline, self.margin_vs_blessed) <= -1:
            raise ValueError("margins are relative and must be greater than -1")


@dataclasses.dataclass(frozen=True)
class Comparison:
    against: str
    reference: float
    required: float
    passed: bool


@dataclasses.dataclass(frozen=True)
class GateDecision:
    blessed: bool
    metric: str
    candidate: float
    comparisons: tuple[Comparison, ...]

    @property
    def reasons(self) -> list[str]:
        """One sentence per comparison, for the report and the logs."""
        return [
            f"{'PASS' if c.passed else 'FAIL'}: candidate {self.metric} {self.candidate:.4f} "
            f"{'>' if c.passed else '<='} {c.required:.4f} required against {c.against} ({c.reference:.4f})"
            for c in self.comparisons
        ]

    def to_json(self) -> dict:
        return {
            "blessed": self.blessed,
            "metric": self.metric,
            "candidate": self.candidate,
            "comparisons": [dataclasses.asdict(c) for c in self.comparisons],
            "reasons": self.reasons,
        }


def _compare(candidate: float, against: str, reference: float, margin: float) -> Comparison:
    required = reference * (1 + margin)
    return Comparison(against=against, reference=reference, required=required, passed=candidate > required)


def decide(
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    last_blessed: dict[str, float] | None,
    config: GateConfig,
) -> GateDecision:
    """Blessed iff the candidate's metric strictly exceeds every required value."""
    if config.metric not in candidate:
        raise ValueError(f"gate metric {config.metric!r} is not among the candidate's metrics {sorted(candidate)}")
    missing = [b for b in config.baselines if b not in baselines]
    if missing:
        raise ValueError(f"gate baseline(s) {missing} were not evaluated; have {sorted(baselines)}")
    strongest = max(config.baselines, key=lambda b: baselines[b][config.metric])
    value = candidate[config.metric]
    comparisons = [_compare(value, f"baseline {strongest} (strongest)", baselines[strongest][config.metric],
                            config.margin_vs_baseline)]
    if last_blessed is not None:
        comparisons.append(_compare(value, "last blessed model", last_blessed[config.metric], config.margin_vs_blessed))
    return GateDecision(
        blessed=all(c.passed for c in comparisons), metric=config.metric, candidate=value,
        comparisons=tuple(comparisons),
    )
