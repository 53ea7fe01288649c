"""The one metrics module: full-catalogue ranking metrics and binary-classification metrics.

Used by the baselines, every model stage, evaluation and the bench, so a number means the same
thing wherever it is printed.

Ranking protocol (docs/architecture.md): for each user, every catalogue item is scored; the user's earlier
items (`seen`) and the reserved indices PAD/OOV are masked; the target's 0-based rank is the
number of unmasked items that score strictly higher than it. The target itself is never masked,
so a repeat purchase counts when the model ranks it.

Tie rule: items that score exactly the same as the target are ordered uniformly at random, and
the metrics are the exact expectation over that random order. With no ties this is the usual
HIT/NDCG/MRR; with many ties (a popularity count of 0, an item-to-item score of 0) it neither
rewards the target for a tie (the optimistic rule) nor punishes it (the pessimistic rule), and it
is deterministic, so runs compare exactly.
"""

from __future__ import annotations

import dataclasses
import numbers
import statistics
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from components import schema

KS = (5, 10, 20, 50)
# A chunk of the score matrix holds at most this many cells (float32: 4 bytes each, plus the
# boolean temporaries of the comparisons), so memory stays bounded for any catalogue size.
MAX_CHUNK_CELLS = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Per-user rank of the target: `higher` items score strictly above it, `ties` score the same.

    `higher` = -1 marks a target that is absent from a truncated list (a funnel's top-N): every
    metric, MRR included, counts it as 0.
    """

    higher: np.ndarray  # int64 [n], -1 = absent
    ties: np.ndarray  # int64 [n], other items only (the target itself is not counted)

    def __post_init__(self):
        if self.higher.shape != self.ties.shape:
            raise ValueError(f"higher {self.higher.shape} and ties {self.ties.shape} differ in shape")

    def __len__(self) -> int:
        return len(self.higher)

    def subset(self, selector) -> Ranks:
        """The ranks of the users `selector` picks (a mask or indices), for the breakdowns and the bootstrap."""
        return Ranks(self.higher[selector], self.ties[selector])

    @classmethod
    def concatenate(cls, parts: Sequence[Ranks]) -> Ranks:
        """The ranks of several chunks of users, in order; no parts gives no users."""
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return cls(np.concatenate([p.higher for p in parts]), np.concatenate([p.ties for p in parts]))

    @classmethod
    def exact(cls, ranks) -> Ranks:
        """Ranks without ties, e.g. from a model that already produced a sorted list."""
        ranks = np.asarray(ranks, dtype=np.int64)
        return cls(ranks, np.zeros_like(ranks))

    @property
    def present(self) -> np.ndarray:
        """bool [n]: the targets inside the list (a funnel's top-N); absent ones count 0 in every metric."""
        return self.higher >= 0


def _mask_rows(seen: Sequence[np.ndarray] | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the seen items of `rows` users, for fancy-index assignment."""
    if seen is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(seen) != rows:
        raise ValueError(f"seen has {len(seen)} rows, scores have {rows}")
    lengths = np.fromiter((len(s) for s in seen), dtype=np.int64, count=rows)
    cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen]) if lengths.sum() else np.zeros(0, np.int64)
    return np.repeat(np.arange(rows), lengths), cols


def target_ranks(
    scores: np.ndarray,
    targets: np.ndarray,
    seen: Sequence[np.ndarray] | None = None,
    masked_columns: Iterable[int] = (schema.PAD_INDEX, schema.OOV_INDEX),
) -> Ranks:
    """Ranks of `targets` in one chunk of a score matrix [users, items], seen items masked.

    `scores` is not modified (nor copied when it is float32 already): each row's higher and tied items are counted
    over the whole row in one pass each, then the masked cells' own counts (the row's seen items and masked_columns,
    each cell once, never the target's) are taken off. Masking a float32 copy with NaN cost a copy and a pass of the
    chunk's cells more; a quarter of the retrieval stage's CPU on Taobao's 55k items was this function.
    """
    scores = np.asarray(scores, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be [users, items] and targets [users]; got {scores.shape}, {targets.shape}")
    num_items = scores.shape[1]
    if len(targets) and (targets.min() < 0 or targets.max() >= num_items):
        raise ValueError(f"target index out of range [0, {num_items})")
    if scores.size and np.isnan(scores.min()):  # min propagates NaN: one reduction, no [users, items] mask
        raise ValueError("scores contain NaN; a model that outputs NaN cannot be ranked")
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    higher = np.count_nonzero(scores > target_scores[:, None], axis=1)
    ties = np.count_nonzero(scores == target_scores[:, None], axis=1) - 1
    cell_rows, cell_cols = _masked_cells(seen, targets, [c for c in masked_columns if c < num_items], num_items)
    values, bar = scores[cell_rows, cell_cols], target_scores[cell_rows]
    higher -= np.bincount(cell_rows[values > bar], minlength=len(targets))
    ties -= np.bincount(cell_rows[values == bar], minlength=len(targets))
    return Ranks(higher.astype(np.int64), ties.astype(np.int64))


def _masked_cells(
    seen: Sequence[np.ndarray] | None, targets: np.ndarray, masked: list[int], num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the cells target_ranks leaves out: each row's seen items and the `masked` columns, each
    cell once (a seen item may repeat, or be a masked column), the row's target never."""
    seen_rows, seen_cols = _mask_rows(seen, len(targets))
    if len(seen_cols) and (seen_cols.min() < 0 or seen_cols.max() >= num_items):
        raise ValueError(f"seen item index out of range [0, {num_items})")
    rows = np.concatenate([seen_rows, np.repeat(np.arange(len(targets)), len(masked))])
    cols = np.concatenate([seen_cols, np.tile(np.asarray(masked, np.int64), len(targets))])
    cells = np.unique(rows * num_items + cols)
    rows, cols = cells // num_items, cells % num_items
    keep = cols != targets[rows]
    return rows[keep], cols[keep]


def chunk_size(num_items: int, max_cells: int = MAX_CHUNK_CELLS) -> int:
    """How many users fit in one chunk of the score matrix."""
    return max(1, max_cells // max(1, num_items))


def ranks_in_chunks(
    score_chunk: Callable[[int, int], np.ndarray],
    targets: np.ndarray,
    seen: Sequence[np.ndarray] | None,
    num_items: int,
    max_cells: int = MAX_CHUNK_CELLS,
) -> Ranks:
    """Target ranks for all users, scoring `score_chunk(start, stop) -> [stop-start, num_items]` chunk by chunk.

    The full [users, items] matrix never exists at once (22k x 12k float32 is already 1 GB).
    """
    targets = np.asarray(targets, dtype=np.int64)
    step = chunk_size(num_items, max_cells)
    parts = []
    for start in range(0, len(targets), step):
        stop = min(start + step, len(targets))
        chunk = score_chunk(start, stop)
        if chunk.shape != (stop - start, num_items):
            raise ValueError(
                f"score_chunk({start}, {stop}) returned {chunk.shape}, expected {(stop - start, num_items)}"
            )
        parts.append(target_ranks(chunk, targets[start:stop], None if seen is None else seen[start:stop]))
    return Ranks.concatenate(parts)


def _discount_prefix(length: int) -> np.ndarray:
    """D[n] = sum_{r<n} 1 / log2(r + 2): the NDCG gain of ranks 0..n-1."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(length) + 2.0))])


def _reciprocal_prefix(length: int) -> np.ndarray:
    """R[n] = sum_{r<n} 1 / (r + 1): the reciprocal ranks of ranks 0..n-1."""
    return np.concatenate([[0.0], np.cumsum(1.0 / (np.arange(length) + 1.0))])


def per_user_metrics(ranks: Ranks, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Each user's expected hit@K, ndcg@K and reciprocal rank under random order among ties.

    The target's position is uniform on [higher, higher + ties], so each metric is the average of
    its value over that range, read from prefix sums in O(1) per user.
    """
    present = ranks.present
    low = np.where(present, ranks.higher, 0)
    span = np.where(present, ranks.ties, 0) + 1
    high = low + span  # exclusive
    out = {}
    for k in ks:
        out[f"hit@{k}"] = np.clip(k - low, 0, span) / span * present
        discount = _discount_prefix(k)
        out[f"ndcg@{k}"] = (discount[np.minimum(high, k)] - discount[np.minimum(low, k)]) / span * present
    reciprocal = _reciprocal_prefix(int(high.max()) if len(high) else 0)
    out["mrr"] = (reciprocal[high] - reciprocal[low]) / span * present
    return out


def ranking_metrics(ranks: Ranks, ks: Sequence[int] = KS) -> dict[str, float]:
    """hit@K, ndcg@K and mrr averaged over users (keys as in the bench JSON)."""
    if not isinstance(ranks, Ranks):
        raise TypeError(
            "ranking_metrics takes metrics.Ranks (0-based: items scoring strictly higher, plus ties); "
            "get them from metrics.target_ranks / ranks_in_chunks, or wrap 0-based ranks without ties "
            "in metrics.Ranks.exact(ranks)"
        )
    if len(ranks) == 0:
        raise ValueError("no users to evaluate")
    return {name: float(values.mean()) for name, values in per_user_metrics(ranks, ks).items()}


def full_catalogue_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    seen: Sequence[np.ndarray] | None = None,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Shortcut for a score matrix that already fits in memory."""
    return ranking_metrics(target_ranks(scores, targets, seen), ks)


# ---------------------------------------------------------------------------------------------
# Binary classification: the ranker's "buy or not"
# ---------------------------------------------------------------------------------------------
def _check_binary(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return labels, scores


def _average_ranks(keys: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of `scores` within each group of `keys`, ties averaged; returns (order, ranks).

    Sorting by (key, score) once and numbering within groups makes per-group AUC vectorised.
    """
    order = np.lexsort((scores, keys))
    k, s = keys[order], scores[order]
    n = len(order)
    group_start = np.r_[True, k[1:] != k[:-1]] if n else np.zeros(0, bool)
    start_pos = np.maximum.accumulate(np.where(group_start, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    position = np.arange(n) - start_pos + 1.0
    tie_start = np.r_[True, (k[1:] != k[:-1]) | (s[1:] != s[:-1])] if n else np.zeros(0, bool)
    tie_id = np.cumsum(tie_start) - 1
    tie_mean = np.bincount(tie_id, weights=position) / np.bincount(tie_id)
    return order, tie_mean[tie_id]


def auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half)."""
    labels, scores = _check_binary(labels, scores)
    positives = labels.sum()
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order, ranks = _average_ranks(np.zeros(len(labels), np.int64), scores)
    return float((ranks[labels[order] == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def gauc(labels, scores, groups) -> float:
    """The DIN paper's group AUC: per-user AUC weighted by the user's impressions.

    Only users with both a positive and a negative count (an AUC is undefined otherwise). When no
    user has both (e.g. one row per user), GAUC is undefined and the result is NaN, not an error:
    a tiny split must not crash a training run over a metric it cannot support.
    """
    _, size, valid, user_auc = _group_aucs(labels, scores, groups)
    if not valid.any():
        return float("nan")
    return float(np.average(user_auc[valid], weights=size[valid]))


def _group_aucs(labels, scores, groups):
    """Per-group rows, AUC-defined flags and AUCs (0 where undefined), shared by `gauc` and `bootstrap_gauc`."""
    labels, scores = _check_binary(labels, scores)
    groups = np.asarray(groups).ravel()
    if groups.shape != labels.shape:
        raise ValueError(f"groups {groups.shape} and labels {labels.shape} differ in shape")
    _, group_ids = np.unique(groups, return_inverse=True)
    order, ranks = _average_ranks(group_ids, scores)
    g, y = group_ids[order], labels[order]
    size = np.bincount(g).astype(np.float64)
    positives = np.bincount(g, weights=y, minlength=len(size))
    negatives = size - positives
    rank_sum = np.bincount(g, weights=ranks * y, minlength=len(size))
    valid = (positives > 0) & (negatives > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        user_auc = np.where(valid, (rank_sum - positives * (positives + 1) / 2) / (positives * negatives), 0.0)
    return group_ids, size, valid, user_auc


def logloss(labels, probabilities, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities are clipped to [eps, 1 - eps]."""
    labels, p = _check_binary(labels, probabilities)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("logloss needs probabilities in [0, 1]; got scores outside it (logits?)")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest threshold first, starting at (0, 0)."""
    labels, scores = _check_binary(labels, scores)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_threshold = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_threshold]
    fp = np.cumsum(1 - y)[last_of_threshold]
    positives, negatives = max(y.sum(), 1.0), max(len(y) - y.sum(), 1.0)
    return (
        np.r_[0.0, fp / negatives],
        np.r_[0.0, tp / positives],
        np.r_[np.inf, s[last_of_threshold]],
    )


# ---------------------------------------------------------------------------------------------
# Uncertainty: a bootstrap over users (rows of one user are not independent)
# ---------------------------------------------------------------------------------------------
def user_bootstrap(users, resamples: int = 1000, seed: int = 0, chunk: int = 100):
    """A function that gives, for any rows keyed by user, their weight in each resample of the users.

    Users are drawn with replacement, as many as there are; a row's weight is its user's count in the draw. The
    same `users` and seed give the same resamples for every model, so differences between models are paired.
    Returns `weights(row_users) -> iterator of [<= chunk, rows] arrays`, `resamples` rows in all.
    """
    universe = np.unique(np.asarray(users))

    def weights(row_users):
        index = np.searchsorted(universe, np.asarray(row_users))
        if (index >= len(universe)).any() or (universe[np.minimum(index, len(universe) - 1)] != row_users).any():
            raise ValueError("user_bootstrap: rows of a user outside the resampled users")
        rng = np.random.default_rng(seed)
        for start in range(0, resamples, chunk):
            counts = rng.multinomial(
                len(universe), np.full(len(universe), 1.0 / len(universe)), size=min(chunk, resamples - start)
            )
            yield counts[:, index].astype(np.float64)

    return weights


def bootstrap_auc(labels, scores, weights) -> np.ndarray:
    """AUC (ties count one half) under each row weighting of `weights` (an iterator of [r, rows] arrays)."""
    labels, scores = _check_binary(labels, scores)
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    tie_starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    out = []
    for w in weights:
        w = w[:, order]
        positive = np.add.reduceat(w * y, tie_starts, axis=1)
        negative = np.add.reduceat(w * (1 - y), tie_starts, axis=1)
        below = np.cumsum(negative, axis=1) - negative
        pairs = positive.sum(axis=1) * negative.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((positive * (below + 0.5 * negative)).sum(axis=1) / pairs)
    return np.concatenate(out)


def bootstrap_gauc(labels, scores, groups, weights) -> np.ndarray:
    """GAUC (as `gauc`) under each user weighting of `weights` (an iterator of [r, rows] arrays over the rows)."""
    group_ids, size, valid, user_auc = _group_aucs(labels, scores, groups)
    first_row = np.unique(group_ids, return_index=True)[1]  # a user's weight is that of any of its rows
    out = []
    for w in weights:
        user_weight = w[:, first_row] * (size * valid)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(user_weight @ user_auc / user_weight.sum(axis=1))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Several seeds of one measurement: the bench's SEEDS=n (bench/aggregate.py) and ranking_bench's own seeds
# ---------------------------------------------------------------------------------------------
def _is_number(value) -> bool:
    """A real number that is no bool (a flag is not a figure to take the median of)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def merge_seeds(runs: list[dict]) -> dict:
    """Merges the per-seed results of one stage, recursively (the bench's SEEDS=n: docs/architecture.md).

    A dict with numeric values gets the medians in place of the values, and `per_seed` / `spread`
    for those keys; nested dicts are merged the same way; other values are kept from the first seed.
    With one seed the result is the run itself.
    """
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    out, per_seed, spread = {}, {}, {}
    for key, value in first.items():
        values = [run.get(key) for run in runs]
        if _is_number(value) and all(_is_number(v) for v in values):
            out[key] = statistics.median(values)
            per_seed[key] = values
            spread[key] = max(values) - min(values)
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in values):
            out[key] = merge_seeds(values)
        else:
            out[key] = value
    if per_seed:
        out["per_seed"] = per_seed
        out["spread"] = spread
    return out


def sample_users(user_ids: np.ndarray, count: int) -> np.ndarray:
    """Ascending rows of the `count` users whose ids hash lowest (all rows when count is 0 or covers them). A hash
    of the id, not a draw: the same users in every run and for every model, and a larger sample holds a smaller
    one, so a shop's figures stay comparable from day to day and as it raises the count."""
    if count <= 0 or count >= len(user_ids):
        return np.arange(len(user_ids))
    import pandas as pd  # only here: the shared metrics stay importable without it

    hashes = pd.util.hash_array(np.asarray(user_ids, dtype=object), categorize=False)
    return np.sort(np.argsort(hashes, kind="stable")[:count])
