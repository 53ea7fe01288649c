"""experiments_bench: OPE estimates against the truth, bandit cumulative rewards and the A/B sample-ratio check.

Why the world is rebuilt: the truth of a policy's value and online bandit rounds need the shop's latent world,
which a warehouse file does not hold. The bench rebuilds it from the preset and seed that built the warehouse
(replaying the logged history, so the state is "now"), and checks that the replay logged as many impressions
as the warehouse holds. Data without impressions (Amazon, Taobao) returns {} and the harness skips the keys.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from components.experiments import ab_analysis, ope, shop
from components.experiments.simulation import simulate_bandit

DEFAULTS = {
    "requests_per_log": 20_000,  # per OPE repeat
    "epsilon": 0.1,  # the target: the new ranker's ranking, explored with prob. 0.1
    "bandit_rounds": 300,
    "bandit_batch": 256,
    "shift_fraction": 0.5,
}


def ope_study(world, history, repeats: int, requests_per_log: int, epsilon: float, seed: int = 0) -> dict:
    """Trains the new ranker on one simulated log, then per repeat logs fresh requests, estimates the ranker's
    (epsilon-explored) click rate per slot with every estimator and computes its exact value on those requests."""
    ranker = shop.LinearRanker.train(history, shop.log_requests(world, requests_per_log, np.random.default_rng([seed, 99])))
    estimates = {name: [] for name in ope.ESTIMATORS}
    truths = []
    for repeat in range(repeats):
        logged = shop.log_requests(world, requests_per_log, np.random.default_rng([seed, repeat]))
        policy = ope.ranking_policy(ranker.rank(logged.users, logged.pool), logged.log.slate_size, epsilon)
        truths.append(shop.true_value(logged.world, logged.users, policy))
        for name, value in ope.evaluate(logged.log, policy, shop.ope_features(history, logged.users)).items():
            estimates[name].append(value)
    truth = np.asarray(truths)
    result: dict = {"truth": float(truth.mean()), "repeats": repeats, "requests_per_log": requests_per_log,
                    "epsilon": epsilon}
    for name, values in estimates.items():
        err = np.asarray(values) - truth
        result[name] = {"estimate": float(np.mean(values)), "bias": float(err.mean()),
                        "rmse": float(math.sqrt(np.mean(err**2))), "per_repeat": [float(v) for v in values]}
    result["truth_per_repeat"] = [float(t) for t in truths]
    return result, ranker


def bandit_study(world, ranker, rounds: int, batch: int, shift_fraction: float, seed: int = 0):
    """Thompson vs exploit vs the new ranker (greedy) vs random, with half of the users' interests shifted
    at one third of the rounds."""
    start = shop.at_session_start(world, np.zeros(0, np.int64), np.random.default_rng(seed))
    return simulate_bandit(start, shop.ShopProposer(ranker), rounds=rounds, batch_size=batch,
                           slate_size=world.config.slate_size, seed=seed,
                           shift=lambda w, rng: w.shift_interests(shift_fraction, rng), shift_round=rounds // 3)


def experiments_bench(warehouse_path: str, data: str = "medium", data_format: str = "synthetic", seeds: int = 1,
                      min_repeats: int = 10, world_seed: int = 0, work_dir: str | None = None) -> dict:
    """Bench keys ope.*, bandit.*, ab.* for a synthetic warehouse; {} for data without impressions.

    The OPE repeats are max(seeds, min_repeats): bias and RMSE need several logs."""
    counts = ab_analysis.impression_count(warehouse_path)
    if data_format != "synthetic" or not counts:
        return {}
    result = {"ab": ab_analysis.analyse_warehouse(warehouse_path)}
    world, events, replayed = shop.replay(data, world_seed)
    if replayed != counts:
        raise ValueError(f"{warehouse_path} holds {counts} impressions but preset {data!r} seed {world_seed} "
                         f"logs {replayed}: the bench needs the preset and seed that built the warehouse")
    history = shop.ObservedHistory.from_events(events, world)
    result["ope"], ranker = ope_study(world, history, max(seeds, min_repeats), DEFAULTS["requests_per_log"],
                                      DEFAULTS["epsilon"])
    run = bandit_study(world, ranker, DEFAULTS["bandit_rounds"], DEFAULTS["bandit_batch"], DEFAULTS["shift_fraction"])
    cumulative = run.cumulative()
    result["bandit"] = {name: {"cumulative_reward": float(curve[-1]),
                               "after_shift_reward": float(run.rewards[name][run.shift_round:].sum() * run.batch_size)}
                        for name, curve in cumulative.items()}
    result["bandit"]["setup"] = {"rounds": DEFAULTS["bandit_rounds"], "batch": DEFAULTS["bandit_batch"],
                                 "shift_round": run.shift_round, "shift_fraction": DEFAULTS["shift_fraction"]}
    if work_dir:
        from components.experiments import report

        Path(work_dir).mkdir(parents=True, exist_ok=True)
        report.bandit_figure(run).savefig(Path(work_dir) / "bandit_curves.png", dpi=110)
    return result
