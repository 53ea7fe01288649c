"""The OPE and bandit studies on the synthetic shop's world: what the off-policy evaluation task runs and reports,
and what the bench's experiments keys measure (bench.py).

Why the world is rebuilt: the truth of a policy's value and online bandit rounds need the shop's latent world,
which a warehouse file does not hold. The bench rebuilds it from the preset and seed that built the warehouse
(replaying the logged history, so the state is "now"), and checks that the replay logged as many impressions
as the warehouse holds. Data without impressions (Amazon, Taobao) returns {} and the harness skips the keys.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np

from components import progress
from components.experiments import ab_analysis, ope, shop
from components.experiments import rewards as reward_weights
from components.experiments.simulation import BANDIT_POLICIES, BanditConfig, BanditRun, simulate_bandit

BANDIT_SEEDS = (0, 1, 2)  # simulator seeds of the reported bandit study; the defaults were tuned on seed 100
MEASURES = {  # bench key -> (BanditRun measure, after the shift only)
    "cumulative_reward": ("clicks", False),
    "after_shift_reward": ("clicks", True),
    "cumulative_score": ("score", False),
    "after_shift_score": ("score", True),
}

_log = logging.getLogger(__name__)  # `log` names a logged impression set below


def ope_study(
    world,
    history,
    repeats: int,
    requests_per_log: int,
    epsilon: float,
    seed: int = 0,
    ranker: shop.LinearRanker | shop.FunnelRanker | None = None,
    reward: reward_weights.RewardWeights = reward_weights.CLICK,
):
    """Per repeat, logs fresh requests, estimates the new ranker's (epsilon-explored) reward per slot (the click
    rate, or the `reward` weighting of click / mute / impression) with every estimator and computes its exact value
    on those requests. Without a ranker, a LinearRanker trained on one more simulated log stands in for the
    funnel's (trained on clicks whatever the weighting)."""
    if ranker is None:
        ranker = shop.LinearRanker.train(
            history, shop.log_requests(world, requests_per_log, np.random.default_rng([seed, 99]))
        )
    estimates = {name: [] for name in ope.ESTIMATORS}
    truths, weights = [], []
    started = time.perf_counter()
    for repeat in range(repeats):
        logged = shop.log_requests(world, requests_per_log, np.random.default_rng([seed, repeat]))
        log = logged.log.weighted(reward)
        policy = ope.ranking_policy(ranker.rank(logged.users, logged.pool), log.slate_size, epsilon)
        truths.append(shop.true_value(logged.world, logged.users, policy, reward))
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
        "reward_weighting": reward.spec(),
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


def bandit_study(
    world,
    history,
    ranker,
    rounds: int,
    batch: int,
    shift_fraction: float,
    seed: int = 0,
    config: BanditConfig | None = None,
    reward: reward_weights.RewardWeights | str = reward_weights.CLICK,
    policies: tuple[str, ...] = BANDIT_POLICIES,
) -> BanditRun:
    """Every bandit policy (simulation.BANDIT_POLICIES) against the ranker's own top K (greedy) and random, with
    `shift_fraction` of the users' interests shifted at one third of the rounds; the learners learn `reward`
    (config.pool_share: their contexts carry shop.category_share). The study's shop is the world with
    config.style_affinity's segment x style cross (shop.with_style_affinity), segments, styles and affinity drawn
    from the seed's own generator: each seed is a new draw of that cross, and the world's requests and outcome
    draws are the ones the seed gives without it."""
    config = config or BanditConfig()
    start = shop.at_session_start(world, np.zeros(0, np.int64), np.random.default_rng(seed))
    if config.style_affinity > 0:
        start = shop.with_style_affinity(start, config.style_affinity, np.random.default_rng([seed, 3]))
    _log.info("bandit study (seed %d): %d rounds of %d requests, %d policies", seed, rounds, batch, len(policies))
    return simulate_bandit(
        start,
        shop.ShopProposer(ranker, history, config.pool_share, config.crosses),
        rounds=rounds,
        batch_size=batch,
        slate_size=world.config.slate_size,
        seed=seed,
        shift=lambda w, rng: w.shift_interests(shift_fraction, rng),
        shift_round=rounds // 3,
        config=config,
        reward=reward,
        policies=policies,
    )


def bandit_summary(runs: list[BanditRun]) -> dict:
    """Bench keys per policy over the seeds' runs: the median of each measure (MEASURES), `per_seed` values and
    `spread` (max - min); `paired`: per seed, the FM's totals minus each other learner's (same requests, same
    outcome draws)."""
    values = {}
    for run in runs:
        for key, (measure, after) in MEASURES.items():
            totals = (
                run.after_shift(measure) if after else {n: float(c[-1]) for n, c in run.cumulative(measure).items()}
            )
            for name, total in totals.items():
                values.setdefault(name, {}).setdefault(key, []).append(total)
    out: dict = {}
    for name, measures in values.items():
        out[name] = {key: float(np.median(v)) for key, v in measures.items()}
        out[name]["per_seed"] = measures
        out[name]["spread"] = {key: float(max(v) - min(v)) for key, v in measures.items()}
    if "bayesian_fm" in values:
        out["paired"] = {
            f"bayesian_fm_minus_{other}": {
                key: [a - b for a, b in zip(values["bayesian_fm"][key], values[other][key])] for key in MEASURES
            }
            for other in ("thompson", "linucb")
            if other in values
        }
    return out


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
    reward: reward_weights.RewardWeights | str = reward_weights.CLICK,
    bandit_seeds: tuple[int, ...] = BANDIT_SEEDS,
    bandit_config: BanditConfig | None = None,
):
    """(keys ab, ope, bandit; the bandit runs, one per seed, for the figures) on the synthetic shop that built the
    warehouse. The OPE estimand is the click rate (the gate compares it with the logged click rate); with a
    weighting other than click-only, ope.weighted holds the same study of that reward. The bandits learn `reward`;
    every run measures both clicks and LINE's score."""
    weights = reward_weights.parse(reward)
    bandit_config = bandit_config or BanditConfig()
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
    if not weights.is_click_only:
        result["ope"]["weighted"], _ = ope_study(
            world, history, repeats, requests_per_log, epsilon, ranker=ranker, reward=weights
        )
    runs = [
        bandit_study(world, history, ranker, bandit_rounds, bandit_batch, shift_fraction, s, bandit_config, weights)
        for s in bandit_seeds
    ]
    if not runs:
        result["bandit"] = {"skipped": "no bandit seeds (the pipeline's enable_bandit is false)"}
        return result, runs
    result["bandit"] = bandit_summary(runs)
    result["bandit"]["setup"] = {
        "rounds": bandit_rounds,
        "batch": bandit_batch,
        "shift_round": runs[0].shift_round,
        "shift_fraction": shift_fraction,
        "slate_size": world.config.slate_size,
        "seeds": list(bandit_seeds),
        "learning_reward": weights.spec(),
        "score_reward": reward_weights.SCORE.spec(),
        "config": dataclasses.asdict(bandit_config),
    }
    return result, runs


def write_report(directory: Path, ope_result: dict, runs: list[BanditRun]) -> None:
    """bandit_curves.png and ope_estimates.png, which the evaluation report embeds."""
    from components.experiments import report

    directory.mkdir(parents=True, exist_ok=True)
    if runs:
        report.bandit_figure(runs).savefig(directory / "bandit_curves.png", dpi=110)
    report.ope_figure(ope_result).savefig(directory / "ope_estimates.png", dpi=110)
