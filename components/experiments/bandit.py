"""Contextual-bandit re-ranker: Bayesian linear regression over retrieval embeddings, Thompson sampling.

The reward of showing item i to user u is modelled as r = phi(u, i) . w + noise, noise ~ N(0, sigma^2), with a
Gaussian prior w ~ N(m0, P0^-1). The posterior stays Gaussian with precision P = P0 + X'X / sigma^2 and mean
P^-1 (P0 m0 + X'y / sigma^2), so a batch of feedback is two matrix additions (no refit over all history).
Thompson sampling draws one w per request from the posterior (scaled by `exploration`) and shows the top K
candidates under it; `exploration = 0` is the greedy posterior-mean policy.

phi(u, i) = [q_u * e_i, e_i, s(u, i), 1]: the retrieval query and item embeddings' elementwise product (a
reweighted dot product), the item embedding (trends shared by all users, which is what an interest shift moves),
and the funnel's score s (prior weight `score_prior` so the untrained bandit ranks like the funnel).
Feedback rows also carry a one-hot of the position shown, so position bias is learnt apart from relevance;
candidates are scored with those position features at zero.
Forgetting (`forgetting` = lambda < 1, for a shifting world): each update first discounts the evidence so far
toward the prior, P <- lambda P + (1 - lambda) P0 and P m <- lambda P m + (1 - lambda) P0 m0 (discounted ridge
regression, as D-LinUCB), so a row seen t updates ago weighs lambda^t; lambda = 1 keeps everything.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from components import atomic
from components.experiments.linalg import weighted_gram

POSTERIOR_FILE = "posterior.npz"
CONFIG_FILE = "bandit.json"
SAVED_MODEL_DIR = "saved_model"


def reranker_features(query: np.ndarray, items: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """phi for each candidate: query [B, D], items [B, N, D], scores [B, N] -> [B, N, 2D + 2]."""
    if items.ndim != 3 or query.shape != (items.shape[0], items.shape[2]) or scores.shape != items.shape[:2]:
        raise ValueError(f"shapes do not line up: query {query.shape}, items {items.shape}, scores {scores.shape}")
    ones = np.ones(scores.shape + (1,), dtype=np.float64)
    return np.concatenate([query[:, None, :] * items, items, scores[..., None], ones], axis=-1)


@dataclasses.dataclass
class BayesianLinearBandit:
    """Posterior over w for rewards r = [phi, position one-hot] . w + N(0, noise_variance)."""

    precision: np.ndarray  # [d, d]
    precision_mean: np.ndarray  # [d]  = P m, kept so that an update is a sum
    noise_variance: float
    num_positions: int
    exploration: float = 1.0
    forgetting: float = 1.0  # lambda: evidence from t updates ago weighs lambda^t
    prior_precision0: np.ndarray | None = None  # P0 and P0 m0, what forgetting shrinks toward (None: no forgetting)
    prior_precision_mean0: np.ndarray | None = None

    @classmethod
    def create(
        cls,
        context_dim: int,
        num_positions: int,
        prior_precision: float = 1.0,
        noise_variance: float = 0.25,
        score_prior: float = 1.0,
        exploration: float = 1.0,
        forgetting: float = 1.0,
    ) -> BayesianLinearBandit:
        """A fresh posterior (= the prior); the score feature (second to last of phi) has prior mean score_prior;
        forgetting in (0, 1] discounts old evidence per update (module docstring)."""
        if prior_precision <= 0 or noise_variance <= 0:
            raise ValueError("prior_precision and noise_variance must be positive")
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must lie in (0, 1], got {forgetting}")
        dim = context_dim + num_positions
        prior_mean = np.zeros(dim)
        prior_mean[context_dim - 2] = score_prior
        precision = prior_precision * np.eye(dim)
        return cls(
            precision,
            precision @ prior_mean,
            noise_variance,
            num_positions,
            exploration,
            forgetting,
            precision.copy(),
            precision @ prior_mean,
        )

    @property
    def dim(self) -> int:
        """The length of w: the context features plus one weight per position."""
        return self.precision.shape[0]

    @property
    def context_dim(self) -> int:
        """The length of a slot's context phi (without the position one-hot)."""
        return self.dim - self.num_positions

    @property
    def mean(self) -> np.ndarray:
        """The posterior mean of w [dim]: the precision-weighted solve, not a stored copy that could drift."""
        return np.linalg.solve(self.precision, self.precision_mean)

    def update(self, contexts: np.ndarray, positions: np.ndarray, rewards: np.ndarray) -> None:
        """Adds one batch of feedback: contexts [n, context_dim], 0-based positions [n], rewards [n]."""
        x = self._with_positions(contexts, positions)
        y = np.asarray(rewards, dtype=np.float64)
        if y.shape != (x.shape[0],) or not np.all(np.isfinite(y)):
            raise ValueError(f"rewards must be finite with shape ({x.shape[0]},), got {y.shape}")
        if self.forgetting < 1 and len(y):
            lam = self.forgetting
            self.precision = lam * self.precision + (1 - lam) * self.prior_precision0
            self.precision_mean = lam * self.precision_mean + (1 - lam) * self.prior_precision_mean0
        self.precision = self.precision + weighted_gram(x) / self.noise_variance
        self.precision_mean = self.precision_mean + np.einsum("ni,n->i", x, y, optimize=False) / self.noise_variance

    def _with_positions(self, contexts: np.ndarray, positions: np.ndarray) -> np.ndarray:
        contexts = np.asarray(contexts, dtype=np.float64)
        positions = np.asarray(positions)
        if contexts.ndim != 2 or contexts.shape[1] != self.context_dim:
            raise ValueError(f"contexts must be [n, {self.context_dim}], got {contexts.shape}")
        if (
            positions.shape != (contexts.shape[0],)
            or positions.min(initial=0) < 0
            or positions.max(initial=0) >= self.num_positions
        ):
            raise ValueError(f"positions must be [n] in [0, {self.num_positions})")
        return np.hstack([contexts, np.eye(self.num_positions)[positions]])

    def sample_weights(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """num draws of the context weights from the posterior (widened by `exploration`): [num, context_dim]."""
        mean = self.mean
        if self.exploration == 0:
            return np.tile(mean[: self.context_dim], (num, 1))
        chol = np.linalg.cholesky(self.precision)  # P = L L'; L'^-1 z ~ N(0, P^-1)
        noise = np.linalg.solve(chol.T, rng.standard_normal((self.dim, num))).T
        return (mean + self.exploration * noise)[:, : self.context_dim]

    def rank(
        self, contexts: np.ndarray, k: int, rng: np.random.Generator, valid: np.ndarray | None = None
    ) -> np.ndarray:
        """Top-k candidate indices per request under a Thompson draw: contexts [B, N, context_dim] -> [B, k].
        Candidates where `valid` [B, N] is False are never chosen."""
        if contexts.ndim != 3 or contexts.shape[2] != self.context_dim or contexts.shape[1] < k:
            raise ValueError(f"contexts must be [B, N>={k}, {self.context_dim}], got {contexts.shape}")
        weights = self.sample_weights(contexts.shape[0], rng)
        scores = np.einsum("bnd,bd->bn", contexts, weights)
        if valid is not None:
            scores = np.where(valid, scores, -np.inf)
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]

    def ucb_scores(self, contexts: np.ndarray, alpha: float) -> np.ndarray:
        """x . mean + alpha sqrt(x' P^-1 x) for contexts [B, N, context_dim] (position features at zero)."""
        covariance = np.linalg.inv(self.precision)[: self.context_dim, : self.context_dim]
        width = np.einsum("bni,bni->bn", contexts @ covariance, contexts, optimize=False)
        return contexts @ self.mean[: self.context_dim] + alpha * np.sqrt(np.maximum(width, 0.0))

    # --------------------------------------------------------------------------------------------------------
    def save(
        self,
        directory: str | Path,
        saved_model: bool = True,
        extra_files: dict[str, str] | None = None,
        extra_arrays: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        """Writes posterior.npz + bandit.json (+ a SavedModel scoring candidates, + extra text files and .npz
        files of arrays) through atomic.staged_directory, bandit.json last."""
        with atomic.staged_directory(directory, last=CONFIG_FILE) as staging:
            prior = {}
            if self.prior_precision0 is not None:
                prior = {"prior_precision": self.prior_precision0, "prior_precision_mean": self.prior_precision_mean0}
            np.savez(staging / POSTERIOR_FILE, precision=self.precision, precision_mean=self.precision_mean, **prior)
            for name, arrays in (extra_arrays or {}).items():
                np.savez(staging / name, **arrays)
            if saved_model:
                _export_saved_model(self, staging / SAVED_MODEL_DIR)
            for name, text in (extra_files or {}).items():
                (staging / name).write_text(text)
            config = {
                "noise_variance": self.noise_variance,
                "num_positions": self.num_positions,
                "exploration": self.exploration,
                "forgetting": self.forgetting,
                "context_dim": self.context_dim,
                "features": "[query*item, item, funnel score, 1] (reranker_features)",
            }
            atomic.write_json(staging / CONFIG_FILE, config)

    @classmethod
    def load(cls, directory: str | Path) -> BayesianLinearBandit:
        """The bandit saved in `directory` (posterior.npz and bandit.json), refused when the two disagree."""
        directory = Path(directory)
        for name in (POSTERIOR_FILE, CONFIG_FILE):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory}: no {name}; is this a bandit model directory?")
        config = json.loads((directory / CONFIG_FILE).read_text())
        with np.load(directory / POSTERIOR_FILE) as arrays:
            precision, precision_mean = arrays["precision"], arrays["precision_mean"]
            prior = [arrays[key] if key in arrays else None for key in ("prior_precision", "prior_precision_mean")]
        if precision.shape != (config["context_dim"] + config["num_positions"],) * 2:
            raise ValueError(f"{directory}: posterior shape {precision.shape} does not match {CONFIG_FILE}")
        return cls(
            precision,
            precision_mean,
            config["noise_variance"],
            config["num_positions"],
            config["exploration"],
            config.get("forgetting", 1.0),
            *prior,
        )


def _export_saved_model(bandit: BayesianLinearBandit, path: Path) -> None:
    """serving_default(query [B, D], items [B, N, D], scores [B, N]) -> {"mean": [B, N], "thompson": [B, N]}."""
    import tensorflow as tf

    context_dim = bandit.context_dim
    embed_dim = (context_dim - 2) // 2
    mean = bandit.mean[:context_dim]
    chol = np.linalg.cholesky(bandit.precision)
    # rows of the covariance's square root restricted to the context weights: w = mean + exploration * z @ root
    root = np.linalg.inv(chol.T)[:context_dim, :].T  # [dim, context_dim]

    class Reranker(tf.Module):
        def __init__(self):
            super().__init__()
            self.mean = tf.constant(mean, tf.float32)
            self.root = tf.constant(root * bandit.exploration, tf.float32)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, embed_dim], tf.float32, name="query"),
                tf.TensorSpec([None, None, embed_dim], tf.float32, name="items"),
                tf.TensorSpec([None, None], tf.float32, name="scores"),
            ]
        )
        def serve(self, query, items, scores):
            ones = tf.ones_like(scores)[..., None]
            phi = tf.concat([query[:, None, :] * items, items, scores[..., None], ones], axis=-1)
            z = tf.random.normal([tf.shape(query)[0], tf.shape(self.root)[0]])
            weights = self.mean + tf.matmul(z, self.root)
            return {"mean": tf.einsum("bnd,d->bn", phi, self.mean), "thompson": tf.einsum("bnd,bd->bn", phi, weights)}

    module = Reranker()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@dataclasses.dataclass
class LinUCB:
    """LinUCB (Li, Chu, Langford & Schapire 2010), the arm LINE started from: ridge regression
    A = prior_precision I + X'X, b = prior_precision m0 + X'y over [phi, position one-hot] (m0 = score_prior on the
    funnel score, so it starts ranking like the funnel), and each candidate scored by its upper confidence bound
    x . A^-1 b + alpha sqrt(x' A^-1 x). The statistics are BayesianLinearBandit's with noise variance 1."""

    model: BayesianLinearBandit
    alpha: float = 1.0

    @classmethod
    def create(
        cls,
        context_dim: int,
        num_positions: int,
        prior_precision: float = 1.0,
        score_prior: float = 1.0,
        alpha=1.0,
        forgetting: float = 1.0,
    ) -> LinUCB:
        """A LinUCB arm on a fresh ridge posterior (noise variance 1); `alpha` scales its upper confidence bonus;
        forgetting < 1 discounts old rows (BayesianLinearBandit)."""
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        model = BayesianLinearBandit.create(
            context_dim, num_positions, prior_precision, 1.0, score_prior, 0.0, forgetting
        )
        return cls(model, alpha)

    def update(self, contexts: np.ndarray, positions: np.ndarray, rewards: np.ndarray) -> None:
        """Adds a batch of shown slots' contexts [n, d], positions [n] and rewards [n] to the ridge posterior."""
        self.model.update(contexts, positions, rewards)

    def rank(
        self, contexts: np.ndarray, k: int, rng: np.random.Generator | None = None, valid: np.ndarray | None = None
    ) -> np.ndarray:
        """Top-k candidates per request by their upper confidence bound: contexts [B, N, context_dim] -> [B, k]."""
        scores = self.model.ucb_scores(contexts, self.alpha)
        if valid is not None:
            scores = np.where(valid, scores, -np.inf)
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
