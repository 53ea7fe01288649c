"""experiments_bench: OPE estimates against the truth, bandit cumulative rewards and the A/B sample-ratio check,
as bench keys; the studies themselves are in studies.py, which the off-policy evaluation task runs too."""

from __future__ import annotations

from pathlib import Path

from components.experiments import ab_analysis
from components.experiments.studies import BANDIT_SEEDS, run_studies, write_report


def experiments_bench(
    warehouse_path: str,
    data: str = "medium",
    data_format: str = "synthetic",
    seeds: int = 1,
    min_repeats: int = 20,
    world_seed: int = 0,
    work_dir: str | None = None,
    requests_per_log: int = 10_000,
    epsilon: float = 0.1,
    bandit_rounds: int = 300,
    bandit_batch: int = 256,
    shift_fraction: float = 0.5,
    ranking_dir: str | None = None,
    features_dir: str | None = None,
    bandit_seeds: tuple[int, ...] = BANDIT_SEEDS,
) -> dict:
    """Bench keys ope.*, bandit.*, ab.* for a synthetic warehouse; {} for data without impressions.

    OPE: the new ranker's ranking explored with prob. `epsilon`, estimated from max(seeds, min_repeats) fresh
    logs of `requests_per_log` requests each (bias and RMSE need several logs). Bandit: `bandit_rounds` rounds of
    `bandit_batch` requests, `shift_fraction` of users shifting interest at a third of the rounds, once per seed of
    `bandit_seeds` (bandit.<policy>: medians, per_seed and spread of clicks and LINE's score, over the run and
    after the shift; the learners learn clicks). With
    ranking_dir and features_dir (the bench's trained funnel), the new policy is that ranker's ranking; without,
    a linear click model over observable features stands in for it (ope.target says which)."""
    if data_format != "synthetic" or not ab_analysis.impression_count(warehouse_path):
        return {}
    result, run = run_studies(
        warehouse_path,
        data,
        world_seed,
        max(seeds, min_repeats),
        requests_per_log,
        epsilon,
        bandit_rounds,
        bandit_batch,
        shift_fraction,
        ranking_dir,
        features_dir,
        bandit_seeds=tuple(bandit_seeds),
    )
    if work_dir:
        write_report(Path(work_dir), result["ope"], run)
    return result
