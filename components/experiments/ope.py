"""Off-policy evaluation of a ranking policy's click rate (or another reward weighting: rewards.py) from logged
slates.

Estimand. V(pi) = E_x[ (1/K) sum_k sum_i pi(i at k | x) q(x, i, k) ], the expected click-through rate per shown
slot (expected clicks per request divided by the slate size K), where q(x, i, k) = P(click | item i shown at
position k to request x). The estimators rest on the item-position independence assumption: the click on the
item at position k depends only on (x, item, k), not on the rest of the slate. The position-based click model
(examination(k) x attraction(x, i)) satisfies it; cascade-style models do not.
Under that assumption, each logged slot is a one-step bandit sample with the item-position propensity
mu(i at k | x) of the logging policy, and

  IPS   = 1/(R K) sum_rows w c,                              w = pi(a at k | x) / mu(a at k | x)
  SNIPS = 1/K sum_k [ sum_{rows at k} w c / sum_{rows at k} w ]   (self-normalised per position)
  DM    = 1/(R K) sum_requests sum_k sum_i pi(i at k | x) qhat(x, i, k)
  DR    = DM + 1/(R K) sum_rows w (c - qhat(x, a, k))
  MRDR  = DR with qhat fitted to minimise DR's variance: weighted least squares with weight
          pi (1 - mu) / mu^2 per row (Farajtabar, Chow & Ghavamzadeh 2018, "More Robust Doubly Robust OPE").

IPS, DR and MRDR are unbiased when mu(i at k | x) > 0 wherever pi(i at k | x) > 0; SNIPS has O(1/n) bias;
DM is biased by the reward model's error.
Estimators take plain arrays (LoggedSlates, a target policy and reward predictions), so they are tested on
hand-made logs independently of any shop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa

from components import schema
from components.experiments import histories, rewards

ESTIMATORS = schema.OPE_ESTIMATORS


class LogError(ValueError):
    """A logged impressions table the estimators cannot use: names the rows and the problem."""


@dataclasses.dataclass(frozen=True)
class LoggedSlates:
    """Logged impressions as aligned arrays; requests are 0..num_requests-1, positions 0..slate_size-1."""

    request: np.ndarray  # int64 [M]
    position: np.ndarray  # int64 [M], 0-based
    item: np.ndarray  # int64 [M], index into the caller's item vocabulary
    propensity: np.ndarray  # float64 [M], mu(item at position | request) of the logging policy
    click: np.ndarray  # float64 [M], 0/1
    num_requests: int
    slate_size: int
    mute: np.ndarray | None = None  # float64 [M], 0/1: the user dismissed the slot (None: not logged)
    reward: np.ndarray | None = None  # float64 [M], what the estimators average; None = the click

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def outcome(self) -> np.ndarray:
        """Each slot's reward: `reward` when weighted (see weighted), else the click."""
        return self.click if self.reward is None else self.reward

    def weighted(self, weights: rewards.RewardWeights) -> LoggedSlates:
        """The same log whose estimand is the per-slot reward under `weights` (click-only keeps the clicks)."""
        if weights.needs_mutes and self.mute is None:
            raise LogError(f"reward weighting {weights.spec()} needs mutes, and this log has none")
        if weights.is_click_only:
            return dataclasses.replace(self, reward=None)
        return dataclasses.replace(self, reward=weights.of(self.click, self.mute))


def _validate(log: LoggedSlates) -> None:
    m = log.request.shape[0]
    for name in ("position", "item", "propensity", "click"):
        if getattr(log, name).shape != (m,):
            raise LogError(f"column {name!r} has shape {getattr(log, name).shape}, expected ({m},)")
    if m == 0:
        raise LogError("the impressions log is empty")
    p = log.propensity
    missing = np.isnan(p)
    if missing.any():
        raise LogError(
            f"{int(missing.sum())} impression(s) have a missing propensity (first row {int(np.argmax(missing))})"
        )
    floor = f"propensity below the floor {schema.MIN_PROPENSITY:g} (schema.MIN_PROPENSITY)"
    for bad, what in (
        (p <= 0, "zero or negative propensity"),
        ((p > 0) & (p < schema.MIN_PROPENSITY), floor),
        (p > 1, "propensity above one"),
    ):
        if bad.any():
            first = int(np.argmax(bad))
            raise LogError(f"{int(bad.sum())} impression(s) have a {what} (first row {first}: {p[first]})")
    if log.position.min() < 0 or log.position.max() >= log.slate_size:
        raise LogError(f"positions must lie in [0, {log.slate_size}), got [{log.position.min()}, {log.position.max()}]")
    if log.item.min() < 0:
        raise LogError("item indices must be >= 0 (map unknown items before building the log)")
    if log.request.min() < 0 or log.request.max() >= log.num_requests:
        raise LogError(f"request indices must lie in [0, {log.num_requests})")
    if not np.isin(log.click, (0.0, 1.0)).all():
        raise LogError("clicks must be 0 or 1")
    for name in ("mute", "reward"):
        values = getattr(log, name)
        if values is not None and (values.shape != (m,) or not np.all(np.isfinite(values))):
            raise LogError(f"column {name!r} must be finite with shape ({m},)")
    if log.mute is not None and (not np.isin(log.mute, (0.0, 1.0)).all() or np.any((log.mute > 0) & (log.click > 0))):
        raise LogError("mutes must be 0 or 1, and a clicked slot is never muted")
    slot = log.request * log.slate_size + log.position
    if np.unique(slot).size != m:
        raise LogError("a (request, position) slot appears more than once")


def from_impressions(
    table: pa.Table, item_index: Mapping[str, int], first_position: int = 0
) -> tuple[LoggedSlates, np.ndarray, np.ndarray]:
    """LoggedSlates from a schema.IMPRESSIONS table, plus the request ids and user ids (one per request).

    Items must all be in `item_index` (the target policy cannot score an item it does not know), and a
    request must belong to one user. `first_position` is the top slot's number (the synthetic shop logs 0).
    The log's mutes are the `muted` column when every row logs one (a table written before the column, or whose
    logger did not record mutes, has nulls: mute None, and a weighting that needs mutes is refused by weighted()).
    """
    missing_propensity = table.column("propensity").null_count if "propensity" in table.column_names else 0
    if missing_propensity:
        raise LogError(f"{missing_propensity} impression(s) have a missing propensity")
    table = schema.validate_table(table, schema.IMPRESSIONS, "impressions")
    items = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    item = histories.lookup(items, item_index, -1)
    unknown = item < 0
    if unknown.any():
        examples = sorted(set(items[unknown]))[:5]
        raise LogError(
            f"{int(unknown.sum())} impression(s) show item(s) unknown to the item vocabulary, e.g. {examples}"
        )
    request_ids, request = np.unique(
        np.asarray(table.column("request_id").to_pylist(), dtype=object), return_inverse=True
    )
    users = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    user_of_request = np.empty(request_ids.size, dtype=object)
    user_of_request[request] = users
    if np.any(user_of_request[request] != users):
        raise LogError("a request_id is logged for more than one user")
    position = table.column("position").to_numpy().astype(np.int64) - first_position
    log = LoggedSlates(
        request=request.astype(np.int64),
        position=position,
        item=item,
        propensity=table.column("propensity").to_numpy().astype(np.float64),
        click=table.column("clicked").to_numpy(zero_copy_only=False).astype(np.float64),
        num_requests=int(request_ids.size),
        slate_size=int(position.max()) + 1,
        mute=logged_mutes(table.column("muted")),
    )
    return log, request_ids, user_of_request


def logged_mutes(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """0/1 mutes of a `muted` column, None when no row logs one; a column logged for some rows only is refused
    (LogError): a partly logged column cannot tell a row without a mute from a row whose mute was not recorded.
    The one rule for every reader of logged mutes (these estimators and the bandit stage's warm start)."""
    if column.null_count == len(column):
        return None
    if column.null_count:
        raise LogError(
            f"{column.null_count} of {len(column)} impression(s) have no `muted` value: log it for all or none"
        )
    return column.to_numpy(zero_copy_only=False).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class SlatePolicy:
    """A target policy by its item-position marginals on each request's candidates.

    candidates[r, j] is an item index (-1 = padding) and marginals[r, j, k] = pi(candidates[r, j] at k | r);
    each position's marginals sum to 1 over a request's candidates."""

    candidates: np.ndarray  # int64 [R, M]
    marginals: np.ndarray  # float64 [R, M, K]

    def __post_init__(self) -> None:
        if self.marginals.shape[:2] != self.candidates.shape:
            raise ValueError(f"marginals {self.marginals.shape} do not match candidates {self.candidates.shape}")
        if np.any(self.marginals[self.candidates < 0] != 0):
            raise ValueError("padding candidates (-1) must have zero probability")
        if not np.allclose(self.marginals.sum(axis=1), 1.0):
            raise ValueError("each position's marginals must sum to 1 over the request's candidates")

    @property
    def slate_size(self) -> int:
        """The positions of a slate (the marginals' last axis)."""
        return self.marginals.shape[2]

    def prob(self, request: np.ndarray, item: np.ndarray, position: np.ndarray) -> np.ndarray:
        """pi(item at position | request) for aligned arrays (0 where the item is not a candidate)."""
        match = self.candidates[request] == item[:, None]
        probs = self.marginals[request, :, np.clip(position, 0, self.slate_size - 1)]
        inside = position < self.slate_size
        return np.where(inside, (probs * match).sum(axis=1), 0.0)

    def expected_reward(self, qhat: Callable[[np.ndarray, np.ndarray], np.ndarray], chunk: int = 4096) -> np.ndarray:
        """sum_k sum_i pi(i at k | x) qhat(x, i, k) per request; qhat(requests [B], items [B, M]) -> [B, M, K]."""
        out = np.empty(self.candidates.shape[0])
        for start in range(0, len(out), chunk):
            requests = np.arange(start, min(start + chunk, len(out)))
            items = np.where(self.candidates[requests] >= 0, self.candidates[requests], 0)
            out[requests] = np.sum(self.marginals[requests] * qhat(requests, items), axis=(1, 2))
        return out


def ranking_policy(ranked: np.ndarray, slate_size: int, epsilon: float) -> SlatePolicy:
    """A ranking made stochastic: with prob. 1-epsilon show its top K in order, else a uniformly random ordered
    K-subset of the request's n candidates, so pi(i at k | x) = (1-epsilon) [i = ranked[x, k]] + epsilon / n.
    ranked [R, M] holds each request's candidates best first, padded with -1 at the end; epsilon = 0 is the
    deterministic ranking."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    valid = ranked >= 0
    counts = valid.sum(axis=1)
    if np.any(counts < slate_size) or np.any(np.diff(valid.astype(np.int8), axis=1) > 0):
        raise ValueError(f"each request needs >= {slate_size} candidates, best first, padding (-1) only at the end")
    marginals = np.repeat((valid * (epsilon / counts)[:, None])[:, :, None], slate_size, axis=2)
    marginals[:, np.arange(slate_size), np.arange(slate_size)] += 1.0 - epsilon
    return SlatePolicy(ranked, marginals)


def sample_ranking_policy(ranked: np.ndarray, slate_size: int, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """One slate per request from ranking_policy(ranked, slate_size, epsilon): int64 [R, K] (to run it online)."""
    slates = ranked[:, :slate_size].copy()
    explore = np.nonzero(rng.random(len(ranked)) < epsilon)[0]
    keys = np.where(ranked[explore] >= 0, rng.random((len(explore), ranked.shape[1])), np.inf)
    order = np.argsort(keys, axis=1)[:, :slate_size]
    slates[explore] = np.take_along_axis(ranked[explore], order, axis=1)
    return slates


def weight_diagnostics(log: LoggedSlates, target_prob: np.ndarray) -> dict[str, float]:
    """How much of the log the importance weights w = pi / mu use: Kish's effective sample size (sum w)^2 / sum w^2
    as a share of the logged slots, the largest weight, and the share of slots the target policy can show (pi > 0).
    A small ess_share is why IPS, DR and MRDR are noisy: their corrections rest on a few rows."""
    w = target_prob / log.propensity
    ess = float(w.sum() ** 2 / np.sum(w**2)) if w.any() else 0.0
    return {"ess_share": ess / len(w), "max_weight": float(w.max()), "support": float(np.mean(target_prob > 0))}


def ips(log: LoggedSlates, target_prob: np.ndarray) -> float:
    """Inverse propensity scoring: the target's per-slot click rate from the logged slots, unbiased but of high
    variance."""
    return float(np.sum(target_prob / log.propensity * log.outcome) / (log.num_requests * log.slate_size))


def snips(log: LoggedSlates, target_prob: np.ndarray) -> float:
    """Self-normalised IPS: per position, the weighted outcomes over the sum of weights; biased, of lower variance."""
    w = target_prob / log.propensity
    per_position = []
    for k in range(log.slate_size):
        at_k = log.position == k
        total = w[at_k].sum()
        if total <= 0:
            raise LogError(f"no logged impression at position {k} has positive target probability: SNIPS undefined")
        per_position.append(np.sum(w[at_k] * log.outcome[at_k]) / total)
    return float(np.mean(per_position))


def dm(log: LoggedSlates, target_value: np.ndarray) -> float:
    """target_value[r] = sum_k sum_i pi(i at k | r) qhat(r, i, k)."""
    return float(np.sum(target_value) / (log.num_requests * log.slate_size))


def dr(log: LoggedSlates, target_prob: np.ndarray, target_value: np.ndarray, qhat_logged: np.ndarray) -> float:
    """Doubly robust: the direct method corrected by IPS on its residuals, unbiased when either part is right."""
    correction = np.sum(target_prob / log.propensity * (log.outcome - qhat_logged))
    return dm(log, target_value) + float(correction / (log.num_requests * log.slate_size))


def mrdr_weights(log: LoggedSlates, target_prob: np.ndarray) -> np.ndarray:
    """Per-row weights of MRDR's reward-model loss, pi (1 - mu) / mu^2, scaled to mean 1 over rows with pi > 0."""
    weights = target_prob * (1.0 - log.propensity) / log.propensity**2
    positive = weights > 0
    if not positive.any():
        raise LogError("no logged impression has positive target probability: MRDR has nothing to fit")
    return weights / weights[positive].mean()


# ---------------------------------------------------------------------------------------------------------------
# Reward model: logistic in features of (request, item) plus a per-position bias, for DM, DR and MRDR.
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RewardModel:
    """qhat(x, i, k) = sigmoid(features(x, i) . w + b_k), fitted by Newton steps with an L2 penalty.

    loss="log" is the usual maximum likelihood fit (DM, DR); loss="squared" minimises weighted squared error,
    which is what MRDR's variance criterion asks for (with its weights)."""

    weights: np.ndarray
    position_bias: np.ndarray

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        position: np.ndarray,
        click: np.ndarray,
        slate_size: int,
        sample_weight: np.ndarray | None = None,
        loss: str = "log",
        l2: float = 1.0,
        iterations: int = 25,
    ) -> RewardModel:
        """qhat fitted on features [n, d] with a per-position bias by Newton steps (log or squared loss, L2 `l2`)."""
        if loss not in ("log", "squared"):
            raise ValueError(f"loss must be 'log' or 'squared', got {loss!r}")
        x = np.hstack([features, np.eye(slate_size)[position]])
        sw = np.ones(len(click)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        keep = sw > 0
        x, y, sw = x[keep], click[keep], sw[keep]
        base = np.clip(np.average(y, weights=sw), 1e-4, 1 - 1e-4)
        theta = np.zeros(x.shape[1])
        theta[features.shape[1] :] = np.log(base / (1 - base))
        penalty = l2 * np.eye(x.shape[1])
        for _ in range(iterations):
            p = _sigmoid(x @ theta)
            if loss == "log":
                grad = x.T @ (sw * (p - y)) + penalty @ theta
                curvature = sw * p * (1 - p)
            else:  # Gauss-Newton on sum sw (y - p)^2 / 2
                slope = p * (1 - p)
                grad = x.T @ (sw * (p - y) * slope) + penalty @ theta
                curvature = sw * slope**2
            hessian = (x * curvature[:, None]).T @ x + penalty
            step = np.linalg.solve(hessian, grad)
            theta -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        return cls(weights=theta[: features.shape[1]], position_bias=theta[features.shape[1] :])

    def predict(self, features: np.ndarray, position: np.ndarray) -> np.ndarray:
        """qhat for rows with the given features and 0-based positions."""
        return _sigmoid(features @ self.weights + self.position_bias[position])

    def predict_all_positions(self, features: np.ndarray) -> np.ndarray:
        """qhat for features [..., d] at every position: [..., K]."""
        return _sigmoid((features @ self.weights)[..., None] + self.position_bias)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


FeatureFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""features(request [B], items [B, N]) -> float [B, N, d]: what the reward model sees about (request, item)."""


def evaluate(log: LoggedSlates, policy: SlatePolicy, features: FeatureFn, l2: float = 1.0) -> dict[str, float]:
    """All five estimates of policy's reward per slot from the log (keys = ESTIMATORS): the click rate, or the
    weighted reward of a `log.weighted(...)` log. The reward model is logistic, so rewards outside [0, 1] are
    mapped into it (y - low) / (high - low) for the fit and its predictions mapped back."""
    target_prob = policy.prob(log.request, log.item, log.position)
    logged_features = features(log.request, log.item[:, None])[:, 0, :]
    estimates = {"ips": ips(log, target_prob), "snips": snips(log, target_prob)}
    low, high = min(0.0, float(log.outcome.min())), max(1.0, float(log.outcome.max()))
    unit = (log.outcome - low) / (high - low)
    fits = {
        "dm": RewardModel.fit(logged_features, log.position, unit, log.slate_size, l2=l2),
        "mrdr": RewardModel.fit(
            logged_features,
            log.position,
            unit,
            log.slate_size,
            sample_weight=mrdr_weights(log, target_prob),
            loss="squared",
            l2=l2,
        ),
    }
    values = {
        name: low * log.slate_size
        + (high - low)
        * policy.expected_reward(lambda req, items, m=model: m.predict_all_positions(features(req, items)))
        for name, model in fits.items()
    }
    logged = {name: low + (high - low) * model.predict(logged_features, log.position) for name, model in fits.items()}
    estimates["dm"] = dm(log, values["dm"])
    estimates["dr"] = dr(log, target_prob, values["dm"], logged["dm"])
    estimates["mrdr"] = dr(log, target_prob, values["mrdr"], logged["mrdr"])
    return estimates
