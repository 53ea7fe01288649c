"""Online bandit simulation against a world that knows the true click probabilities.

The world is the synthetic shop's latent world (components/warehouse/synthetic.py, adapted in shop.py) or any
object with
  click_probability(users int[B], items int[B, K]) -> float[B, K]   P(click) of items[b, k] shown at position k
  sample_requests(n, rng) -> int[n]                                  users of n requests
Policies see only what a deployed re-ranker sees, given by a `propose(world, users, rng) -> Proposal` callable:
each request's candidates, their context features and the funnel's scores. An interest shift replaces the
world mid-run (`shift(world, rng)`); the funnel is not retrained, so its scores go stale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from components.experiments import rewards as reward_weights
from components.experiments.bandit import BayesianLinearBandit, LinUCB, reranker_features
from components.experiments.bayesian_fm import BayesianFM

BANDIT_POLICIES = ("bayesian_fm", "thompson", "linucb", "exploit", "greedy", "random")


class World(Protocol):
    def click_probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """float [B, K]: the true P(click) of items[b, k] (int [B, K]) shown to users[b] (int [B]) at position k."""
        ...

    def sample_requests(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """int [n]: the users of `n` requests, drawn as the shop's traffic arrives."""
        ...


# A world may also have mute_probability(users int[B], items int[B, K]) -> float[B, K], P(mute) of items[b, k]
# shown at position k (never on a click); without it nothing is ever muted.


@dataclasses.dataclass(frozen=True)
class Proposal:
    """One batch of requests as the re-ranker sees it; candidates are padded with -1 (never shown)."""

    candidates: np.ndarray  # int64 [B, N]
    contexts: np.ndarray  # float64 [B, N, d]  (second to last feature = funnel score, last = 1)
    scores: np.ndarray  # float64 [B, N]  the funnel's scores
    fields: np.ndarray | None = None  # int64 [B, N, F] >= 0: categorical features for the FM beyond user and item

    @property
    def valid(self) -> np.ndarray:
        """bool [B, N]: the real candidates (not the -1 padding)."""
        return self.candidates >= 0


Propose = Callable[[World, np.ndarray, np.random.Generator], Proposal]


@dataclasses.dataclass(frozen=True)
class EmbeddingFunnel:
    """A funnel given by embeddings: query per user [U, D], items [I, D]; candidates are the top num_candidates
    items by dot product (the funnel's score), contexts are bandit.reranker_features."""

    query: np.ndarray
    items: np.ndarray
    num_candidates: int

    def __call__(self, world: World, users: np.ndarray, rng: np.random.Generator) -> Proposal:
        scores = self.query[users] @ self.items.T
        top = np.argpartition(-scores, self.num_candidates - 1, axis=1)[:, : self.num_candidates]
        top_scores = np.take_along_axis(scores, top, axis=1)
        return Proposal(top, reranker_features(self.query[users], self.items[top], top_scores), top_scores)


@dataclasses.dataclass(frozen=True)
class BanditRun:
    """Per-round mean clicks (`rewards`) and mean LINE score (`scores`: impression 0.5, click 1, mute 0) per request
    for each policy, the round at which interests shifted, and the weighting the bandits learnt from."""

    rewards: dict[str, np.ndarray]
    shift_round: int | None
    batch_size: int
    scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    learning_reward: str = reward_weights.CLICK.spec()
    seed: int = 0

    def cumulative(self, measure: str = "clicks") -> dict[str, np.ndarray]:
        """Cumulative clicks ("clicks") or score ("score") over rounds (total, not per request)."""
        per_round = {"clicks": self.rewards, "score": self.scores}[measure]
        return {name: np.cumsum(r) * self.batch_size for name, r in per_round.items()}

    def after_shift(self, measure: str = "clicks") -> dict[str, float]:
        """Total clicks or score from the shift's round on (the whole run without a shift)."""
        per_round = {"clicks": self.rewards, "score": self.scores}[measure]
        start = self.shift_round or 0
        return {name: float(r[start:].sum() * self.batch_size) for name, r in per_round.items()}


@dataclasses.dataclass(frozen=True)
class BanditConfig:
    """Hyper-parameters of the learning policies and the shop's context features. Chosen on tuning seeds 100-102
    of the medium shop (report seeds are 0-2), each learner by its mean clicks over the run on its own grid
    (components/experiments/tuning.py: GRIDS, then SECOND_STAGE around each learner's best): the pool's category
    share for every learner (+10% clicks for each), forgetting 0.99, Thompson's exploration 0.25, the FM's 0.1; the
    figures are in README's bandit study paragraph. Re-tuned (session 9) on the shop with the segment x style cross
    (style_affinity 0.5; tuning.GRIDS, measured in part on a machine at load 20+: Thompson's 12 points, LinUCB's
    alpha 0.1, the FM's three explorations): every point measured lies within ~0.3% of its learner's defaults
    (Thompson's best, prior 3 and exploration 0.1, +68 of 116,142 clicks, and its prior is shared with LinUCB,
    exploit and the FM's dense block; the FM's 0.1, 119,876 clicks, beats 0.05 and 0.2 on each of the three
    seeds), so the defaults stay."""

    noise_variance: float = 0.25  # linear Thompson
    thompson_exploration: float = 0.25  # linear Thompson: scale of its draws' deviation from the mean
    prior_precision: float = 1.0  # linear Thompson, exploit and LinUCB (ridge), FM dense weights
    score_prior: float = 1.0  # prior mean of the funnel score's weight (all learners start ranking like the funnel)
    linucb_alpha: float = 0.3
    fm_dim: int = 4
    fm_bias_precision: float = 30.0
    fm_factor_precision: float = 100.0
    fm_init_scale: float = 0.1
    fm_exploration: float = 0.1
    fm_sweeps: int = 3
    fm_time_rounds: int = 10  # the FM's time field: rounds per time bucket (a "day" of the simulation)
    fm_forgetting: float = 0.99  # the FM's discount of old evidence per round (1: none; bayesian_fm.py)
    thompson_forgetting: float = 0.99  # the same for linear Thompson and exploit (bandit.py)
    linucb_forgetting: float = 0.99
    pool_share: bool = True  # the shop's proposals add each candidate's category share of the pool (shop.py)
    crosses: bool = True  # the shop's proposals carry the engineered user-item crosses (shop.CROSSES)
    style_affinity: float = 0.5  # RMS of the bandit shop's segment x style cross (shop.with_style_affinity; 0: none)


class _Learner:
    """A learning policy in the simulator: rank(...) -> chosen [B, k]; update(...) with the per-slot rewards."""

    def rank(self, batch: Proposal, users: np.ndarray, t: int, k: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def update(self, batch: Proposal, users: np.ndarray, t: int, chosen: np.ndarray, reward: np.ndarray) -> None:
        raise NotImplementedError


def _shown_rows(batch: Proposal, chosen: np.ndarray) -> np.ndarray:
    return np.take_along_axis(batch.contexts, chosen[..., None], axis=1).reshape(-1, batch.contexts.shape[2])


class _Linear(_Learner):
    def __init__(self, model: BayesianLinearBandit | LinUCB):
        self.model = model

    def rank(self, batch, users, t, k, rng):
        return self.model.rank(batch.contexts, k, rng, batch.valid)

    def update(self, batch, users, t, chosen, reward):
        k = chosen.shape[1]
        self.model.update(_shown_rows(batch, chosen), np.tile(np.arange(k), len(chosen)), reward.reshape(-1))


class _FM(_Learner):
    """The Bayesian FM over fields [user, item, time bucket, *proposal.fields]; rewards mapped into [0, 1]."""

    def __init__(self, model: BayesianFM, weights: reward_weights.RewardWeights, time_rounds: int):
        self.model, self.time_rounds = model, time_rounds
        self.low = min(weights.impression, weights.click, weights.mute)
        self.span = max(weights.impression, weights.click, weights.mute) - self.low
        if self.span <= 0:
            raise ValueError(f"reward weighting {weights.spec()} gives every slot the same reward: nothing to learn")

    def values(self, batch: Proposal, users: np.ndarray, t: int) -> np.ndarray:
        shape = batch.candidates.shape
        columns = [
            np.broadcast_to(users[:, None], shape),
            batch.candidates.clip(min=0),
            np.full(shape, t // self.time_rounds),
        ]
        extra = [] if batch.fields is None else [batch.fields[..., f] for f in range(batch.fields.shape[2])]
        return np.stack(columns + extra, axis=-1).astype(np.int64)

    def rank(self, batch, users, t, k, rng):
        scores = self.model.sample_scores(batch.contexts, self.values(batch, users, t), rng)
        return top_k(scores, batch.valid, k)

    def update(self, batch, users, t, chosen, reward):
        values = np.take_along_axis(self.values(batch, users, t), chosen[..., None], axis=1)
        y = (reward.reshape(-1) - self.low) / self.span
        positions = np.tile(np.arange(chosen.shape[1]), len(chosen))
        self.model.update(_shown_rows(batch, chosen), values.reshape(-1, values.shape[2]), positions, y)


def _learners(
    policies, batch: Proposal, slate_size: int, config: BanditConfig, weights, seed: int
) -> dict[str, _Learner]:
    dim = batch.contexts.shape[2]
    num_fields = 3 + (0 if batch.fields is None else batch.fields.shape[2])
    make = {
        "thompson": lambda: _Linear(
            BayesianLinearBandit.create(
                dim,
                slate_size,
                config.prior_precision,
                config.noise_variance,
                config.score_prior,
                config.thompson_exploration,
                config.thompson_forgetting,
            )
        ),
        "exploit": lambda: _Linear(
            BayesianLinearBandit.create(
                dim,
                slate_size,
                config.prior_precision,
                config.noise_variance,
                config.score_prior,
                0.0,
                config.thompson_forgetting,
            )
        ),
        "linucb": lambda: _Linear(
            LinUCB.create(
                dim,
                slate_size,
                config.prior_precision,
                config.score_prior,
                config.linucb_alpha,
                config.linucb_forgetting,
            )
        ),
        "bayesian_fm": lambda: _FM(
            BayesianFM.create(
                dim,
                num_fields,
                slate_size,
                config.fm_dim,
                config.prior_precision,
                config.fm_bias_precision,
                config.fm_factor_precision,
                config.fm_init_scale,
                config.score_prior,
                config.fm_exploration,
                config.fm_sweeps,
                seed,
                config.fm_forgetting,
            ),
            weights,
            config.fm_time_rounds,
        ),
    }
    return {name: make[name]() for name in policies if name in make}


def top_k(scores: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best valid scores per row, best first."""
    return np.argsort(-np.where(valid, scores, -np.inf), axis=1, kind="stable")[:, :k]


def simulate_bandit(
    world: World,
    propose: Propose,
    rounds: int,
    batch_size: int,
    slate_size: int,
    seed: int,
    shift: Callable[[World, np.random.Generator], World] | None = None,
    shift_round: int | None = None,
    config: BanditConfig = BanditConfig(),
    reward: reward_weights.RewardWeights | str = reward_weights.CLICK,
    policies: tuple[str, ...] = BANDIT_POLICIES,
) -> BanditRun:
    """Runs every policy on the same requests and the same outcome draws, round after round.

    bayesian_fm: the Bayesian factorization machine with Thompson sampling (bayesian_fm.py); thompson: the
    Bayesian linear bandit with Thompson sampling; linucb: LinUCB over the same features; exploit: the linear
    model ranking by its posterior mean (learns, never explores); greedy: the funnel's own top K (static);
    random: K valid candidates at random. The learners start from their priors (ranking like the funnel) and update
    after each round from the rewards (`reward`, a weighting of click / mute / plain impression) of what they
    showed. Each slot's outcome comes from one uniform draw u per (request, position), shared by the policies:
    click if u < P(click), mute if P(click) <= u < P(click) + P(mute). The world's draws (requests, candidates,
    shift, outcomes) come from one generator and each policy's from its own, so a policy's run does not depend on
    which other policies run beside it.
    """
    if (shift is None) != (shift_round is None):
        raise ValueError("give both shift and shift_round, or neither")
    unknown = set(policies) - set(BANDIT_POLICIES)
    if unknown:
        raise ValueError(f"unknown bandit policies {sorted(unknown)}; choose among {BANDIT_POLICIES}")
    weights = reward_weights.parse(reward)
    rng = np.random.default_rng([seed, 0])  # the world: requests, proposals, the shift and the outcome draws
    # each policy's own choices draw from its own generator, so the world's stream is the same whichever policies run
    policy_rng = {name: np.random.default_rng([seed, 1, BANDIT_POLICIES.index(name)]) for name in policies}
    learners: dict[str, _Learner] = {}
    clicks_per_round = {name: np.zeros(rounds) for name in policies}
    score_per_round = {name: np.zeros(rounds) for name in policies}
    for t in range(rounds):
        if shift is not None and t == shift_round:
            world = shift(world, rng)
        users = world.sample_requests(batch_size, rng)
        batch = propose(world, users, rng)
        if not learners:
            learners = _learners(policies, batch, slate_size, config, weights, seed)
        draws = rng.random((batch_size, slate_size))
        choices = {}
        for name in policies:
            if name in learners:
                choices[name] = learners[name].rank(batch, users, t, slate_size, policy_rng[name])
            elif name == "greedy":
                choices[name] = top_k(batch.scores, batch.valid, slate_size)
            else:
                choices[name] = top_k(policy_rng[name].random(batch.scores.shape), batch.valid, slate_size)
        for name, chosen in choices.items():
            shown = np.take_along_axis(batch.candidates, chosen, axis=1)
            p_click = world.click_probability(users, shown)
            clicks = draws < p_click
            mutes = np.zeros_like(clicks)
            if hasattr(world, "mute_probability"):
                mutes = ~clicks & (draws < p_click + world.mute_probability(users, shown))
            clicks_per_round[name][t] = clicks.sum(axis=1).mean()
            score_per_round[name][t] = reward_weights.SCORE.of(clicks, mutes).sum(axis=1).mean()
            if name in learners:
                learners[name].update(batch, users, t, chosen, weights.of(clicks, mutes))
    return BanditRun(clicks_per_round, shift_round, batch_size, score_per_round, weights.spec(), seed)
