"""experiments_bench: OPE estimates against the truth, bandit cumulative rewards and the A/B sample-ratio check,
as bench keys, from the off-policy evaluation task's entry (stage.run_off_policy_evaluation), which runs the
studies (studies.py) and writes ope.json."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from components.experiments import ab_analysis, stage


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
) -> dict:
    """Bench keys ope.*, bandit.*, ab.* for a synthetic warehouse; {} for data without impressions.

    OPE: the new ranker's ranking explored with prob. `epsilon`, estimated from max(seeds, min_repeats) fresh
    logs of `requests_per_log` requests each (bias and RMSE need several logs). Bandit: `bandit_rounds` rounds of
    `bandit_batch` requests, `shift_fraction` of users shifting interest at a third of the rounds, once per seed of
    studies.BANDIT_SEEDS (bandit.<policy>: medians, per_seed and spread of clicks and LINE's score, over the run and
    after the shift; the learners learn clicks). With
    ranking_dir and features_dir (the bench's trained funnel), the new policy is that ranker's ranking; without,
    a linear click model over observable features stands in for it (ope.target says which). The task's report
    (ope.json and the two figures) is written to `work_dir`, or to a temporary folder."""
    if data_format != "synthetic" or not ab_analysis.impression_count(warehouse_path):
        return {}
    with tempfile.TemporaryDirectory(prefix="experiments-bench-") as scratch:
        report = Path(work_dir) if work_dir else Path(scratch, "report")
        stage.run_off_policy_evaluation(
            warehouse_path,
            data,
            str(report),
            shop_seed=world_seed,
            repeats=max(seeds, min_repeats),
            requests_per_log=requests_per_log,
            epsilon=epsilon,
            bandit_rounds=bandit_rounds,
            features=features_dir,
            ranking_model=ranking_dir,
            bandit_batch=bandit_batch,
            shift_fraction=shift_fraction,
        )
        written = json.loads((report / "ope.json").read_text())
    return {key: written[key] for key in ("ab", "ope", "bandit")}
