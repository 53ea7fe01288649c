"""Online simulations against a world that knows the true click probabilities.

The world is the synthetic shop's latent world (components/warehouse/synthetic.py) or any object with
  click_probability(users int[B], items int[B, K]) -> float[B, K]   P(click) of items[b, k] shown at position k
  sample_requests(n, rng) -> int[n]                                  users of n requests
  shift_interests(rng) -> world                                      the same world after an interest shift
Policies see only what a deployed re-ranker sees: the funnel's query embedding of the user (computed before the
simulation, so it goes stale after a shift), the item embeddings and the funnel's candidates and scores.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from components.experiments.bandit import BayesianLinearBandit, reranker_features

BANDIT_POLICIES = ("thompson", "exploit", "greedy", "random")


class World(Protocol):
    def click_probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...
    def sample_requests(self, n: int, rng: np.random.Generator) -> np.ndarray: ...
    def shift_interests(self, rng: np.random.Generator) -> "World": ...


@dataclasses.dataclass(frozen=True)
class Funnel:
    """What the re-ranker is given: query embeddings per user [U, D], item embeddings [I, D]; candidates are
    the top num_candidates items by dot product (the funnel's score)."""

    query: np.ndarray
    items: np.ndarray
    num_candidates: int

    def candidates(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items [B, N] best first, scores [B, N]) for each request's user."""
        scores = self.query[users] @ self.items.T
        top = np.argpartition(-scores, self.num_candidates - 1, axis=1)[:, : self.num_candidates]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)

    def contexts(self, users: np.ndarray, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return reranker_features(self.query[users], self.items[candidates], scores)


@dataclasses.dataclass(frozen=True)
class BanditRun:
    """Per-round mean clicks per request for each policy, and the round at which interests shifted."""

    rewards: dict[str, np.ndarray]
    shift_round: int | None
    batch_size: int

    def cumulative(self) -> dict[str, np.ndarray]:
        """Cumulative clicks over rounds (total, not per request)."""
        return {name: np.cumsum(r) * self.batch_size for name, r in self.rewards.items()}


def simulate_bandit(world: World, funnel: Funnel, rounds: int, batch_size: int, slate_size: int,
                    shift_round: int | None, seed: int, noise_variance: float = 0.25, prior_precision: float = 1.0,
                    warm_start: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> BanditRun:
    """Runs every policy on the same requests and the same click draws, round after round.

    thompson: the Bayesian bandit with Thompson sampling; exploit: the same model ranking by its posterior mean
    (learns, never explores); greedy: the funnel's own top K (static); random: K of the funnel's candidates at
    random. Both bandits update after each round from the clicks on what they showed. warm_start =
    (contexts, positions, clicks) of logged feedback to start the posterior from (the DAG stage does this).
    """
    rng = np.random.default_rng(seed)
    dim = funnel.query.shape[1] * 2 + 2
    bandits = {}
    for name, exploration in (("thompson", 1.0), ("exploit", 0.0)):
        bandits[name] = BayesianLinearBandit.create(dim, slate_size, prior_precision, noise_variance, exploration=exploration)
        if warm_start is not None:
            bandits[name].update(*warm_start)
    rewards = {name: np.zeros(rounds) for name in BANDIT_POLICIES}
    for t in range(rounds):
        if shift_round is not None and t == shift_round:
            world = world.shift_interests(rng)
        users = world.sample_requests(batch_size, rng)
        candidates, scores = funnel.candidates(users)
        contexts = funnel.contexts(users, candidates, scores)
        draws = rng.random((batch_size, slate_size))
        choices = {
            "thompson": bandits["thompson"].rank(contexts, slate_size, rng),
            "exploit": bandits["exploit"].rank(contexts, slate_size, rng),
            "greedy": np.tile(np.arange(slate_size), (batch_size, 1)),
            "random": np.argsort(rng.random(candidates.shape), axis=1)[:, :slate_size],
        }
        for name, chosen in choices.items():
            shown = np.take_along_axis(candidates, chosen, axis=1)
            clicks = (draws < world.click_probability(users, shown)).astype(np.float64)
            rewards[name][t] = clicks.sum(axis=1).mean()
            if name in bandits:
                rows = np.take_along_axis(contexts, chosen[..., None], axis=1).reshape(-1, dim)
                positions = np.tile(np.arange(slate_size), batch_size)
                bandits[name].update(rows, positions, clicks.reshape(-1))
    return BanditRun(rewards, shift_round, batch_size)
