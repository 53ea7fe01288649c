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

from components.experiments.bandit import BayesianLinearBandit, reranker_features

BANDIT_POLICIES = ("thompson", "exploit", "greedy", "random")


class World(Protocol):
    def click_probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...
    def sample_requests(self, n: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Proposal:
    """One batch of requests as the re-ranker sees it; candidates are padded with -1 (never shown)."""

    candidates: np.ndarray  # int64 [B, N]
    contexts: np.ndarray  # float64 [B, N, d]  (second to last feature = funnel score, last = 1)
    scores: np.ndarray  # float64 [B, N]  the funnel's scores

    @property
    def valid(self) -> np.ndarray:
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
    """Per-round mean clicks per request for each policy, and the round at which interests shifted."""

    rewards: dict[str, np.ndarray]
    shift_round: int | None
    batch_size: int

    def cumulative(self) -> dict[str, np.ndarray]:
        """Cumulative clicks over rounds (total, not per request)."""
        return {name: np.cumsum(r) * self.batch_size for name, r in self.rewards.items()}


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
    noise_variance: float = 0.25,
    prior_precision: float = 1.0,
    score_prior: float = 1.0,
) -> BanditRun:
    """Runs every policy on the same requests and the same click draws, round after round.

    thompson: the Bayesian bandit with Thompson sampling; exploit: the same model ranking by its posterior mean
    (learns, never explores); greedy: the funnel's own top K (static); random: K valid candidates at random.
    Both bandits start from the prior (ranking like the funnel) and update after each round from the clicks
    on what they showed.
    """
    if (shift is None) != (shift_round is None):
        raise ValueError("give both shift and shift_round, or neither")
    rng = np.random.default_rng(seed)
    bandits: dict[str, BayesianLinearBandit] = {}
    rewards = {name: np.zeros(rounds) for name in BANDIT_POLICIES}
    for t in range(rounds):
        if shift is not None and t == shift_round:
            world = shift(world, rng)
        users = world.sample_requests(batch_size, rng)
        batch = propose(world, users, rng)
        if not bandits:
            dim = batch.contexts.shape[2]
            bandits = {
                name: BayesianLinearBandit.create(
                    dim, slate_size, prior_precision, noise_variance, score_prior, exploration
                )
                for name, exploration in (("thompson", 1.0), ("exploit", 0.0))
            }
        draws = rng.random((batch_size, slate_size))
        choices = {
            "thompson": bandits["thompson"].rank(batch.contexts, slate_size, rng, batch.valid),
            "exploit": bandits["exploit"].rank(batch.contexts, slate_size, rng, batch.valid),
            "greedy": top_k(batch.scores, batch.valid, slate_size),
            "random": top_k(rng.random(batch.scores.shape), batch.valid, slate_size),
        }
        for name, chosen in choices.items():
            shown = np.take_along_axis(batch.candidates, chosen, axis=1)
            clicks = (draws < world.click_probability(users, shown)).astype(np.float64)
            rewards[name][t] = clicks.sum(axis=1).mean()
            if name in bandits:
                rows = np.take_along_axis(batch.contexts, chosen[..., None], axis=1).reshape(
                    -1, batch.contexts.shape[2]
                )
                bandits[name].update(rows, np.tile(np.arange(slate_size), batch_size), clicks.reshape(-1))
    return BanditRun(rewards, shift_round, batch_size)
