"""Hyper-parameter grid of the bandit learners on tuning seeds (never the report seeds, studies.BANDIT_SEEDS).

Each learner runs alone (a policy's run does not depend on the others beside it: simulation.simulate_bandit), on
the medium shop's world as the bench rebuilds it, for every point of its grid and every tuning seed; one JSON line
per (learner, point, seed) with the clicks and LINE's score over the run and after the shift. A learner's value is
picked by its mean clicks over the run on those seeds.

    python -m components.experiments.tuning --out grid.jsonl [--learners thompson linucb bayesian_fm] [--second-stage]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time

import numpy as np

from components.experiments import shop, studies
from components.experiments.simulation import BanditConfig

TUNING_SEEDS = (100, 101, 102)
# The grids of the study's shop with the segment x style cross (BanditConfig.style_affinity 0.5; session 9), around
# the values the shop without it chose (session 8: the pool share on, +10% for every learner, so no longer a choice).
GRIDS = {  # learner -> {BanditConfig field: values}
    "thompson": {
        "prior_precision": (1.0, 3.0),
        "thompson_exploration": (0.1, 0.25, 0.5),
        "thompson_forgetting": (0.98, 0.99),
    },
    "linucb": {
        "linucb_alpha": (0.1, 0.3, 1.0),
        "linucb_forgetting": (0.98, 0.99),
    },
    "bayesian_fm": {  # fm_dim 8 was started beside it: seed 100 at exploration 0.05 119,647 clicks vs dim 4's
        "fm_exploration": (0.05, 0.1, 0.2),  # 119,628 for 30% more CPU; not run further (a machine at load 20+)
        "fm_dim": (4,),
    },
}
_T = {"prior_precision": 1.0, "thompson_exploration": 0.25, "thompson_forgetting": 0.99}
_L = {"linucb_alpha": 0.3, "linucb_forgetting": 0.99}
_F = {"fm_exploration": 0.1, "fm_dim": 4}
SECOND_STAGE = {  # around each learner's best of GRIDS (--second-stage)
    "thompson": [
        _T | {"noise_variance": 0.1},
        _T | {"noise_variance": 1.0},
    ],
    "linucb": [
        _L | {"prior_precision": 0.3},
        _L | {"prior_precision": 3.0},
    ],
    "bayesian_fm": [
        _F | {"fm_factor_precision": 30.0},
        _F | {"fm_factor_precision": 300.0},
        _F | {"fm_forgetting": 0.995},
        _F | {"fm_bias_precision": 10.0},
        _F | {"fm_factor_precision": 1e6, "fm_init_scale": 0.0},  # no interactions: biases and dense weights only
    ],
}


def points(grid: dict[str, tuple]) -> list[dict]:
    """Every combination of a grid's values, as dicts."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def grid(learner: str) -> list[dict]:
    """The points a learner is tuned over: its grid's combinations."""
    return points(GRIDS[learner])


def setup(preset: str = "medium", world_seed: int = 0, requests_per_log: int = 10_000):
    """(world, history, ranker) as the bench's study builds them (studies.run_studies without a trained funnel)."""
    world, events, _ = shop.replay(preset, world_seed)
    history = shop.ObservedHistory.from_events(events, world)
    ranker = shop.LinearRanker.train(
        history, shop.log_requests(world, requests_per_log, np.random.default_rng([world_seed, 99]))
    )
    return world, history, ranker


def run_point(world, history, ranker, learner: str, point: dict, seed: int, rounds=300, batch=256, shift=0.5):
    """One learner's run at one grid point: its totals (clicks and score, over the run and after the shift)."""
    config = dataclasses.replace(BanditConfig(), **point)
    run = studies.bandit_study(world, history, ranker, rounds, batch, shift, seed, config, policies=(learner,))
    return {
        "clicks": float(run.cumulative("clicks")[learner][-1]),
        "after_shift_clicks": run.after_shift("clicks")[learner],
        "score": float(run.cumulative("score")[learner][-1]),
        "after_shift_score": run.after_shift("score")[learner],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--learners", nargs="+", default=list(GRIDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(TUNING_SEEDS))
    parser.add_argument("--points", help="JSON {learner: [points]} instead of the grids")
    parser.add_argument("--second-stage", action="store_true", help="the SECOND_STAGE points instead of the grids")
    args = parser.parse_args(argv)
    if args.second_stage:
        args.points = json.dumps(SECOND_STAGE)
    if set(args.seeds) & set(studies.BANDIT_SEEDS):
        raise SystemExit(f"tuning seeds must not include the report seeds {studies.BANDIT_SEEDS}")
    world, history, ranker = setup()
    with open(args.out, "a") as out:
        for learner in args.learners:
            for point in json.loads(args.points)[learner] if args.points else grid(learner):
                for seed in args.seeds:
                    started = time.process_time()
                    totals = run_point(world, history, ranker, learner, point, seed)
                    row = {"learner": learner, "point": point, "seed": seed, **totals}
                    out.write(json.dumps(row | {"cpu_s": round(time.process_time() - started, 1)}) + "\n")
                    out.flush()


if __name__ == "__main__":
    main()
