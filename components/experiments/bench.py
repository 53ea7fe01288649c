"""experiments_bench: OPE estimates against the truth, bandit cumulative rewards and the A/B sample-ratio check.

Why the world is rebuilt: the truth of a policy's value and online bandit rounds need the shop's latent world,
which a warehouse file does not hold. The bench rebuilds it from the preset and seed that built the warehouse
(replaying the logged history, so the state is "now"), and checks that the replay logged as many impressions
as the warehouse holds. Data without impressions (Amazon, Taobao) returns {} and the harness skips the keys.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from components import progress
from components.experiments import ab_analysis, ope, shop
from components.experiments.simulation import simulate_bandit

_log = logging.getLogger(__name__)  # `log` names a logged impression set below


def ope_study(
    world,
    history,
    repeats: int,
    requests_per_log: int,
    epsilon: float,
    seed: int = 0,
    ranker: shop.LinearRanker | shop.FunnelRanker | None = None,
):
    """Per repeat, logs fresh requests, estimates the new ranker's (epsilon-explored) click rate per slot with
    every estimator and computes its exact value on those requests. Without a ranker, a LinearRanker trained
    on one more simulated log stands in for the funnel's."""
    if ranker is None:
        ranker = shop.LinearRanker.train(
            history, shop.log_requests(world, requests_per_log, np.random.default_rng([seed, 99]))
        )
    estimates = {name: [] for name in ope.ESTIMATORS}
    truths, weights = [], []
    started = time.perf_counter()
    for repeat in range(repeats):
        logged = shop.log_requests(world, requests_per_log, np.random.default_rng([seed, repeat]))
        log = logged.log
        policy = ope.ranking_policy(ranker.rank(logged.users, logged.pool), log.slate_size, epsilon)
        truths.append(shop.true_value(logged.world, logged.users, policy))
        weights.append(ope.weight_diagnostics(log, policy.prob(log.request, log.item, log.position)))
        for name, value in ope.evaluate(log, policy, shop.ope_features(history, logged.users)).items():
            estimates[name].append(value)
        elapsed = time.perf_counter() - started
        _log.info(
            "OPE log %d/%d (%d requests): truth %.4f, mrdr %.4f, snips %.4f  %.0f s, %s",
            repeat + 1,
            repeats,
            requests_per_log,
            truths[-1],
            estimates["mrdr"][-1],
            estimates["snips"][-1],
            elapsed,
            progress.time_left(elapsed, repeat + 1, repeats),
        )
    truth = np.asarray(truths)
    result: dict = {
        "truth": float(truth.mean()),
        "repeats": repeats,
        "requests_per_log": requests_per_log,
        "epsilon": epsilon,
        "target": type(ranker).__name__,
    }
    for name, values in estimates.items():
        err = np.asarray(values) - truth
        result[name] = {
            "estimate": float(np.mean(values)),
            "bias": float(err.mean()),
            "rmse": float(math.sqrt(np.mean(err**2))),
            "per_repeat": [float(v) for v in values],
        }
    result["truth_per_repeat"] = [float(t) for t in truths]
    result["weights"] = {key: float(np.median([w[key] for w in weights])) for key in weights[0]}  # median over logs
    return result, ranker


def bandit_study(world, history, ranker, rounds: int, batch: int, shift_fraction: float, seed: int = 0):
    """Thompson vs exploit vs the ranker's own top K (greedy) vs random, with `shift_fraction` of the users'
    interests shifted at one third of the rounds."""
    start = shop.at_session_start(world, np.zeros(0, np.int64), np.random.default_rng(seed))
    _log.info("bandit study: %d rounds of %d requests, four policies", rounds, batch)
    return simulate_bandit(
        start,
        shop.ShopProposer(ranker, history),
        rounds=rounds,
        batch_size=batch,
        slate_size=world.config.slate_size,
        seed=seed,
        shift=lambda w, rng: w.shift_interests(shift_fraction, rng),
        shift_round=rounds // 3,
    )


def funnel_ranker(ranking_dir: str | None, features_dir: str | None, world, events):
    """The pipeline's ranker as the new policy when the bench trained one; None otherwise."""
    if not ranking_dir or not features_dir:
        return None
    from components import schema
    from components.ranking.export import load_ranker

    spec = schema.FeatureSpec.read(features_dir)
    return shop.FunnelRanker.build(
        load_ranker(ranking_dir), world, events, schema.read_vocab(features_dir, schema.ITEM_VOCAB), spec.max_len
    )


def run_studies(
    warehouse_path: str,
    preset: str,
    world_seed: int,
    repeats: int,
    requests_per_log: int,
    epsilon: float,
    bandit_rounds: int,
    bandit_batch: int,
    shift_fraction: float,
    ranking_dir: str | None = None,
    features_dir: str | None = None,
):
    """(keys ab, ope, bandit; the bandit run for the figures) on the synthetic shop that built the warehouse."""
    counts = ab_analysis.impression_count(warehouse_path)
    result = {"ab": ab_analysis.analyse(warehouse_path)}
    world, events, replayed = shop.replay(preset, world_seed)
    if replayed != counts:
        raise ValueError(
            f"{warehouse_path} holds {counts} impressions but preset {preset!r} seed {world_seed} "
            f"logs {replayed}: the bench needs the preset and seed that built the warehouse"
        )
    history = shop.ObservedHistory.from_events(events, world)
    target = funnel_ranker(ranking_dir, features_dir, world, events)
    result["ope"], ranker = ope_study(world, history, repeats, requests_per_log, epsilon, ranker=target)
    run = bandit_study(world, history, ranker, bandit_rounds, bandit_batch, shift_fraction)
    result["bandit"] = {
        name: {
            "cumulative_reward": float(curve[-1]),
            "after_shift_reward": float(run.rewards[name][run.shift_round :].sum() * run.batch_size),
        }
        for name, curve in run.cumulative().items()
    }
    result["bandit"]["setup"] = {
        "rounds": bandit_rounds,
        "batch": bandit_batch,
        "shift_round": run.shift_round,
        "shift_fraction": shift_fraction,
        "slate_size": world.config.slate_size,
    }
    return result, run


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
    `bandit_batch` requests, `shift_fraction` of users shifting interest at a third of the rounds. With
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
    )
    if work_dir:
        write_report(Path(work_dir), result["ope"], run)
    return result


def write_report(directory: Path, ope_result: dict, run) -> None:
    """bandit_curves.png and ope_estimates.png, which the evaluation report embeds."""
    from components.experiments import report

    directory.mkdir(parents=True, exist_ok=True)
    report.bandit_figure(run).savefig(directory / "bandit_curves.png", dpi=110)
    report.ope_figure(ope_result).savefig(directory / "ope_estimates.png", dpi=110)
