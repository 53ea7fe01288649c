"""Bayesian factorization machine as a contextual bandit's arm model (LINE's ranker, 2019): Laplace posterior,
Thompson sampling, online mini-batch updates.

Model. A shown slot is rewarded y in [0, 1] (a click, or a reward weighting mapped into [0, 1]) with
P(y = 1) = sigmoid(f), fractional labels allowed (the Bernoulli log-likelihood y log p + (1 - y) log(1 - p)), and

  f = x . w_dense + sum_f w_{f, x_f} + sum_{f < g} <v_{f, x_f}, v_{g, x_g}>

over dense features x (the same [features, funnel score, 1] the linear bandit sees, plus a one-hot of the position
shown) and categorical fields (user id, item id, item category, user features, the time of the request, ...), each
value with a bias w and a factor embedding v in R^k: the second-order interactions of Rendle's FM.

Posterior. Gaussian priors: w_dense ~ N(m0, 1/prior_precision), a field value's w ~ N(0, 1/bias_precision) and
v ~ N(v0, 1/factor_precision), where v0 ~ N(0, init_scale^2) is drawn once per value (deterministic by seed): a
prior centred on zero would make v = 0 a stationary point that the fit never leaves (every embedding's gradient is
the sum of the others). The posterior is approximated by Laplace around the MAP, with a BLOCK-DIAGONAL Hessian:
one block per field value, theta_b = (w_b, v_b) in R^(1+k), and one full block for w_dense. Why this structure:
  - within a block the Hessian is exact, not a Gauss-Newton approximation: each row holds one value per field, so
    f is linear in theta_b given the other blocks (f = c + a . theta_b with a = [1, sum of the row's other v]);
    the log-likelihood's Hessian in theta_b is then sum_rows p (1 - p) a a' with no second-derivative term;
  - blocks of one field never share a row, so a field's sub-problem separates over its values: one Newton step
    per value, all values of a field at once (block coordinate Newton over the fields);
  - the dropped cross-blocks couple a user with each item it saw (n_users x n_items of them): the full Hessian is
    too large to store or invert for a catalogue, and a diagonal one would drop the within-embedding correlations
    that cost nothing to keep at k + 1 <= 17.
Online updates (assumed density filtering): each mini-batch's prior is the previous posterior; the MAP is found by
`sweeps` block-Newton sweeps from the previous means, then each touched block's precision becomes
P_b + sum_rows p (1 - p) a a' at the new MAP. Blocks no row touches keep their prior; an empty batch changes
nothing.
Forgetting (for a shifting world): with `forgetting` = lambda < 1, every update first discounts the evidence
already in the posterior, P <- lambda P + (1 - lambda) P_prior (stabilised forgetting: the precision shrinks toward
the prior's, the means stay until data moves them), so a row seen t updates ago weighs about lambda^t and the
posterior widens again where no new data arrives. The dense block is discounted at every update; a field value's
block lazily, by lambda^age with age = the updates since it was last written (the same recursion unrolled over
the updates that did not touch it), also when Thompson draws it. lambda = 1 keeps all evidence (the ADF above).
Thompson sampling: one draw of every block a request needs (its user, each candidate's item, the categories among
its candidates, ...), once per request and value, so candidates sharing a value share its draw; `exploration`
scales the draws' spread (0: rank by the posterior mean).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from components.experiments.linalg import weighted_gram

CONFIG_KEYS = (
    "dim",
    "num_positions",
    "prior_precision",
    "bias_precision",
    "factor_precision",
    "init_scale",
    "exploration",
    "sweeps",
    "forgetting",
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _segment_sum(values: np.ndarray, slot: np.ndarray, count: int) -> np.ndarray:
    """Sums of values' rows by slot (every slot in 0..count-1 has a row): [count, ...]; np.add.at, faster."""
    order = np.argsort(slot, kind="stable")
    starts = np.searchsorted(slot[order], np.arange(count))
    return np.add.reduceat(values[order], starts, axis=0)


@dataclasses.dataclass
class FieldTable:
    """Blocks of one categorical field, grown on demand: means [n, 1 + k], precisions [n, 1 + k, 1 + k]."""

    mean: np.ndarray
    precision: np.ndarray
    prior_mean: np.ndarray
    seen: np.ndarray  # [n] bool: values created so far (the others are created on first use)
    stamp: np.ndarray | None = None  # [n] int: the update that last wrote the block (forgetting's age)

    def __post_init__(self) -> None:
        if self.stamp is None:
            self.stamp = np.zeros(len(self.seen), np.int64)


@dataclasses.dataclass
class BayesianFM:
    """The posterior; create() gives the prior. Fields are given per slot as int [n, F] (values >= 0)."""

    dense_mean: np.ndarray  # [D]
    dense_precision: np.ndarray  # [D, D]
    fields: list[FieldTable]
    dim: int  # k, the factor dimension
    num_positions: int
    bias_precision: float
    factor_precision: float
    init_scale: float
    exploration: float = 1.0
    sweeps: int = 3
    seed: int = 0
    prior_precision: float = 1.0  # the dense weights' prior precision (what forgetting shrinks toward)
    forgetting: float = 1.0  # lambda: evidence from t updates ago weighs lambda^t (1: never forgotten)
    step: int = 0  # updates with data so far

    @classmethod
    def create(
        cls,
        dense_dim: int,
        num_fields: int,
        num_positions: int,
        dim: int = 4,
        prior_precision: float = 1.0,
        bias_precision: float = 100.0,
        factor_precision: float = 100.0,
        init_scale: float = 0.1,
        score_prior: float = 1.0,
        exploration: float = 0.3,
        sweeps: int = 3,
        seed: int = 0,
        forgetting: float = 1.0,
    ) -> BayesianFM:
        """The prior: dense weights N(m0, I / prior_precision) with m0 = score_prior on the funnel score (the
        second to last dense feature, as in the linear bandit), so the untrained FM ranks like the funnel. The
        defaults are the simulator's (simulation.BanditConfig, tuned on the medium shop): weak priors on 6
        fields' biases and embeddings make Thompson's draws noise that swamps the funnel's score. forgetting:
        lambda in (0, 1], the discount of old evidence per update (module docstring)."""
        if min(prior_precision, bias_precision, factor_precision) <= 0 or dim < 1 or init_scale < 0:
            raise ValueError("precisions must be positive, dim >= 1 and init_scale >= 0")
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must lie in (0, 1], got {forgetting}")
        total = dense_dim + num_positions
        mean = np.zeros(total)
        if dense_dim >= 2:
            mean[dense_dim - 2] = score_prior
        tables = [
            FieldTable(
                np.zeros((0, dim + 1)), np.zeros((0, dim + 1, dim + 1)), np.zeros((0, dim + 1)), np.zeros(0, bool)
            )
            for _ in range(num_fields)
        ]
        return cls(
            mean,
            prior_precision * np.eye(total),
            tables,
            dim,
            num_positions,
            bias_precision,
            factor_precision,
            init_scale,
            exploration,
            sweeps,
            seed,
            prior_precision,
            forgetting,
        )

    @property
    def dense_dim(self) -> int:
        """The length of the dense context (the dense weights less one per position)."""
        return len(self.dense_mean) - self.num_positions

    @property
    def prior_block_precision(self) -> np.ndarray:
        """The prior precision [1 + dim, 1 + dim] of one field value's bias and factors, where every row starts."""
        return np.diag([self.bias_precision] + [self.factor_precision] * self.dim)

    def block_precision(self, f: int, values: np.ndarray, ahead: int = 0) -> np.ndarray:
        """The precisions [n, 1 + k, 1 + k] of field f's blocks `values` [n] as of `ahead` updates from now:
        lambda^age P + (1 - lambda^age) P_prior, age = updates since the block was written (+ ahead)."""
        table = self.fields[f]
        if self.forgetting == 1:
            return table.precision[values]
        keep = self.forgetting ** (self.step + ahead - table.stamp[values])[:, None, None]
        return keep * table.precision[values] + (1 - keep) * self.prior_block_precision

    def dense_prior_precision(self) -> np.ndarray:
        """The dense block's precision as the next update's prior: lambda P + (1 - lambda) prior_precision I."""
        if self.forgetting == 1:
            return self.dense_precision.copy()
        eye = self.prior_precision * np.eye(len(self.dense_mean))
        return self.forgetting * self.dense_precision + (1 - self.forgetting) * eye

    # ---- blocks ----------------------------------------------------------------------------------------------
    def _ensure(self, values: np.ndarray) -> None:
        """Creates the blocks of values [n, F] not seen yet at their prior."""
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(self.fields) or (values.size and values.min() < 0):
            raise ValueError(f"field values must be int [n, {len(self.fields)}] >= 0, got {values.shape}")
        for f, table in enumerate(self.fields):
            needed = int(values[:, f].max(initial=-1)) + 1
            if needed > len(table.seen):
                size = max(needed, 2 * len(table.seen), 16)
                grow = size - len(table.seen)
                table.mean = np.vstack([table.mean, np.zeros((grow, self.dim + 1))])
                table.prior_mean = np.vstack([table.prior_mean, np.zeros((grow, self.dim + 1))])
                table.precision = np.concatenate([table.precision, np.zeros((grow, self.dim + 1, self.dim + 1))])
                table.seen = np.concatenate([table.seen, np.zeros(grow, bool)])
                table.stamp = np.concatenate([table.stamp, np.zeros(grow, np.int64)])
            new = np.unique(values[:, f])
            new = new[~table.seen[new]]
            if len(new):
                # v0 per (field, value) from its own stream: the same value gets the same prior in any order
                start = np.stack(
                    [np.random.default_rng([self.seed, f, int(v)]).normal(0.0, self.init_scale, self.dim) for v in new]
                )
                table.prior_mean[new, 1:] = start
                table.mean[new] = table.prior_mean[new]
                table.precision[new] = self.prior_block_precision
                table.stamp[new] = self.step
                table.seen[new] = True

    def _dense_rows(self, dense: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        dense = np.asarray(dense, dtype=np.float64)
        if dense.shape[-1] != self.dense_dim:
            raise ValueError(f"dense features must have {self.dense_dim} columns, got {dense.shape}")
        onehot = np.zeros(dense.shape[:-1] + (self.num_positions,))
        if positions is not None:
            positions = np.asarray(positions)
            if positions.min(initial=0) < 0 or positions.max(initial=0) >= self.num_positions:
                raise ValueError(f"positions must lie in [0, {self.num_positions})")
            onehot = np.eye(self.num_positions)[positions]
        return np.concatenate([dense, onehot], axis=-1)

    # ---- scoring ---------------------------------------------------------------------------------------------
    @staticmethod
    def logit(dense_w: np.ndarray, x: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """f for rows: dense weights and features [..., D], blocks [..., F, 1 + k] -> [...]."""
        v = blocks[..., 1:]
        total = v.sum(axis=-2)
        pairwise = 0.5 * (np.einsum("...k,...k->...", total, total) - np.einsum("...fk,...fk->...", v, v))
        return np.einsum("...d,...d->...", x, dense_w) + blocks[..., 0].sum(axis=-1) + pairwise

    def predict(self, dense: np.ndarray, values: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """P(y = 1) at the posterior mean for rows [n, D], values [n, F] (positions None: position effects off)."""
        self._ensure(values)
        blocks = np.stack([t.mean[values[:, f]] for f, t in enumerate(self.fields)], axis=1)
        return _sigmoid(self.logit(self.dense_mean, self._dense_rows(dense, positions), blocks))

    def sample_parameters(self, values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One posterior draw per request of what its candidates need: values [B, N, F] -> dense weights [B, D]
        and blocks [B, N, F, 1 + k]; candidates of a request with the same value of a field share its draw.
        exploration scales the draws' deviation from the mean (0: the mean)."""
        batch, n = values.shape[:2]
        self._ensure(values.reshape(-1, len(self.fields)))
        if self.exploration == 0:
            blocks = np.stack([t.mean[values[..., f]] for f, t in enumerate(self.fields)], axis=2)
            return np.tile(self.dense_mean, (batch, 1)), blocks
        chol = np.linalg.cholesky(self.dense_precision)  # P = L L'; L'^-1 z ~ N(0, P^-1)
        noise = np.linalg.solve(chol.T, rng.standard_normal((len(self.dense_mean), batch))).T
        blocks = np.empty((batch, n, len(self.fields), self.dim + 1))
        request = np.repeat(np.arange(batch), n)
        for f, table in enumerate(self.fields):
            keys, inverse = np.unique(request * len(table.seen) + values[..., f].ravel(), return_inverse=True)
            value = keys % len(table.seen)
            root = np.linalg.cholesky(self.block_precision(f, value))
            z = rng.standard_normal((len(keys), self.dim + 1, 1))
            draw = table.mean[value] + self.exploration * np.linalg.solve(np.swapaxes(root, 1, 2), z)[..., 0]
            blocks[:, :, f] = draw[inverse.ravel()].reshape(batch, n, -1)
        return self.dense_mean + self.exploration * noise, blocks

    def sample_scores(self, dense: np.ndarray, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Thompson scores, logits under one posterior draw per request: dense [B, N, D], values [B, N, F] ->
        [B, N], position effects off (the candidates are not placed yet)."""
        dense_w, blocks = self.sample_parameters(values, rng)
        return self.logit(dense_w[:, None, :], self._dense_rows(dense, None), blocks)

    # ---- fitting ---------------------------------------------------------------------------------------------
    def update(self, dense: np.ndarray, values: np.ndarray, positions: np.ndarray, rewards: np.ndarray) -> None:
        """One mini-batch of shown slots: dense [n, D], values [n, F], 0-based positions [n], rewards [n] in
        [0, 1]. The previous posterior is the prior; the MAP by block-coordinate Newton, then the Laplace
        precisions at it."""
        y = np.asarray(rewards, dtype=np.float64)
        if y.ndim != 1 or not np.all(np.isfinite(y)) or y.min(initial=0) < 0 or y.max(initial=0) > 1:
            raise ValueError("rewards must be finite, in [0, 1], one per row")
        if len(y) == 0:
            return
        values = np.asarray(values)
        if values.shape[0] != len(y) or np.shape(dense)[0] != len(y):
            raise ValueError("dense, values and rewards must have one row per slot")
        self._ensure(values)
        x = self._dense_rows(dense, positions)
        prior_dense = (self.dense_mean.copy(), self.dense_prior_precision())
        prior_blocks = []
        for f, table in enumerate(self.fields):
            used = np.unique(values[:, f])
            prior_blocks.append((used, table.mean[used].copy(), self.block_precision(f, used, ahead=1)))
        self.step += 1
        w = self.dense_mean.copy()
        blocks = np.stack([t.mean[values[:, f]] for f, t in enumerate(self.fields)], axis=1)  # [n, F, 1 + k]
        for _ in range(self.sweeps):
            w = self._newton_dense(x, blocks, y, w, *prior_dense)
            for f, (used, mean0, precision0) in enumerate(prior_blocks):
                slot = np.searchsorted(used, values[:, f])
                blocks[:, f] = self._newton_field(x, w, blocks, f, slot, y, mean0, precision0)[slot]
        self._set_posterior(x, w, blocks, values, prior_dense, prior_blocks)

    def _newton_dense(self, x, blocks, y, w, mean0, precision0):
        p = _sigmoid(self.logit(w, x, blocks))
        hessian = precision0 + weighted_gram(x, p * (1 - p))
        grad = np.einsum("ni,n->i", x, p - y, optimize=False) + precision0 @ (w - mean0)
        return w - np.linalg.solve(hessian, grad)

    def _gradient_rows(self, x, w, blocks, f):
        """a = [1, sum of the row's other embeddings] and c = f - a . theta_f for every row."""
        v = blocks[..., 1:]
        others = v.sum(axis=1) - v[:, f]
        a = np.concatenate([np.ones((len(x), 1)), others], axis=1)
        c = self.logit(w, x, blocks) - np.einsum("nj,nj->n", a, blocks[:, f])
        return a, c

    def _newton_field(self, x, w, blocks, f, slot, y, mean0, precision0):
        a, c = self._gradient_rows(x, w, blocks, f)
        used = len(mean0)
        theta = np.zeros((used, self.dim + 1))
        theta[slot] = blocks[:, f]
        p = _sigmoid(c + np.einsum("nj,nj->n", a, theta[slot]))
        grad = np.einsum("bij,bj->bi", precision0, theta - mean0) + _segment_sum(a * (p - y)[:, None], slot, used)
        outer = (p * (1 - p))[:, None, None] * a[:, :, None] * a[:, None, :]
        hessian = precision0 + _segment_sum(outer, slot, used)
        return theta - np.linalg.solve(hessian, grad[..., None])[..., 0]

    def _set_posterior(self, x, w, blocks, values, prior_dense, prior_blocks) -> None:
        """Means at the MAP found, precisions = prior + sum p (1 - p) a a' there (the Laplace approximation)."""
        p = _sigmoid(self.logit(w, x, blocks))
        curvature = p * (1 - p)
        self.dense_mean = w
        self.dense_precision = prior_dense[1] + weighted_gram(x, curvature)
        for f, (used, _, precision0) in enumerate(prior_blocks):
            slot = np.searchsorted(used, values[:, f])
            a, _ = self._gradient_rows(x, w, blocks, f)
            outer = curvature[:, None, None] * a[:, :, None] * a[:, None, :]
            self.fields[f].precision[used] = precision0 + _segment_sum(outer, slot, len(used))
            self.fields[f].stamp[used] = self.step
            theta = np.zeros((len(used), self.dim + 1))
            theta[slot] = blocks[:, f]
            self.fields[f].mean[used] = theta

    # ---- persistence -------------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The posterior as named arrays (np.savez), with the configuration as JSON text under "config"."""
        out = {"dense_mean": self.dense_mean, "dense_precision": self.dense_precision}
        for f, table in enumerate(self.fields):
            seen = np.nonzero(table.seen)[0]
            out |= {f"field{f}_values": seen, f"field{f}_mean": table.mean[seen]}
            out |= {f"field{f}_precision": table.precision[seen], f"field{f}_prior_mean": table.prior_mean[seen]}
            out |= {f"field{f}_stamp": table.stamp[seen]}
        config = {key: getattr(self, key) for key in CONFIG_KEYS} | {"num_fields": len(self.fields), "seed": self.seed}
        return out | {"config": np.array(json.dumps(config)), "step": np.array(self.step)}

    @classmethod
    def from_arrays(cls, arrays) -> BayesianFM:
        """The FM of fm_posterior.npz (np.load of it): its config, dense posterior and every field's rows."""
        config = json.loads(str(arrays["config"]))
        dense_dim = len(arrays["dense_mean"]) - config["num_positions"]
        kwargs = {key: config[key] for key in CONFIG_KEYS if key != "num_positions" and key in config}
        fm = cls.create(dense_dim, config["num_fields"], config["num_positions"], seed=config["seed"], **kwargs)
        fm.dense_mean, fm.dense_precision = np.array(arrays["dense_mean"]), np.array(arrays["dense_precision"])
        for f, table in enumerate(fm.fields):
            values = np.asarray(arrays[f"field{f}_values"], dtype=np.int64)
            size = int(values.max(initial=-1)) + 1
            table.mean = np.zeros((size, fm.dim + 1))
            table.prior_mean = np.zeros((size, fm.dim + 1))
            table.precision = np.zeros((size, fm.dim + 1, fm.dim + 1))
            table.seen = np.zeros(size, bool)
            table.stamp = np.zeros(size, np.int64)
            table.mean[values], table.prior_mean[values] = arrays[f"field{f}_mean"], arrays[f"field{f}_prior_mean"]
            table.precision[values], table.seen[values] = arrays[f"field{f}_precision"], True
            if f"field{f}_stamp" in arrays:  # written before forgetting: every block as of step 0
                table.stamp[values] = arrays[f"field{f}_stamp"]
        fm.step = int(arrays["step"]) if "step" in arrays else 0
        return fm

    # ---- the objective (tests compare the Laplace precisions with its numeric Hessian) ----------------------
    def negative_log_posterior(
        self, dense: np.ndarray, values: np.ndarray, positions: np.ndarray, rewards: np.ndarray, prior: BayesianFM
    ) -> float:
        """-log p(theta | batch) + const at this object's means, with `prior`'s posterior as the prior."""
        x = self._dense_rows(dense, positions)
        blocks = np.stack([t.mean[values[:, f]] for f, t in enumerate(self.fields)], axis=1)
        p = _sigmoid(self.logit(self.dense_mean, x, blocks))
        y = np.asarray(rewards, dtype=np.float64)
        loss = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
        diff = self.dense_mean - prior.dense_mean
        loss += 0.5 * diff @ prior.dense_prior_precision() @ diff
        for f, (table, before) in enumerate(zip(self.fields, prior.fields)):
            used = np.unique(values[:, f])
            for v, precision in zip(used, prior.block_precision(f, used, ahead=1)):
                d = table.mean[v] - before.mean[v]
                loss += 0.5 * d @ precision @ d
        return float(loss)
