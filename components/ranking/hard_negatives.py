"""Hard negatives from the retriever's candidates.

At serving the ranker orders retrieval's top-N, items that already look plausible for the user. Trained only
on "target vs one popularity-sampled item", it learns to tell a plausible item from a random popular one, which
does not help there (on Amazon Beauty the funnel fell below retrieval alone). So each train row's list holds,
beside its target, negatives drawn from the retriever's top-N for the same history.

Excluded from the pool: the target, the row's history, and every item the user buys anywhere in the train
split (a later purchase of the same user is not a negative).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from components import schema
from components.ranking.data import RankingData

log = logging.getLogger(__name__)
_MATMUL_ROWS = 2048  # [rows, num_items] float32 scores per batch: ~100 MB at 12k items (one buffer per thread)
SELECT_THREADS = 2


def left_padded(values: np.ndarray, offsets: np.ndarray, fill: int = schema.PAD_INDEX) -> np.ndarray:
    """int64 [rows, longest] from a flat ragged sequence, padded with `fill` on the left (most recent last)."""
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max(initial=0)))
    rows = np.repeat(np.arange(len(lengths)), lengths)
    columns = np.arange(len(values)) - np.repeat(offsets[:-1], lengths) + np.repeat(width - lengths, lengths)
    out = np.full((len(lengths), width), fill, dtype=np.int64)
    out[rows, columns] = values
    return out


def most_distinct_items(rows: np.ndarray) -> int:
    """The largest number of distinct non-padding entries in any row of an int matrix."""
    ordered = np.sort(rows, axis=1)
    new = np.ones_like(ordered, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return int((new & (ordered != schema.PAD_INDEX)).sum(axis=1).max(initial=0))


def encode_by_length(retriever, hist: np.ndarray, cats: np.ndarray, behaviour=None) -> np.ndarray:
    """float32 [rows, D] query embeddings, encoded in order of history length: the query tower trims each batch
    to its longest history, so batches of short histories (most of them) skip the padded steps. `behaviour`
    (serving.funnel.Behaviour aligned with `hist`, None: unknown) reaches a retriever that reads time as the
    funnel hands it at serving (funnel.retrieval_queries)."""
    from components.serving.funnel import retrieval_queries

    order = np.argsort((hist != schema.PAD_INDEX).sum(axis=1), kind="stable")
    queries = np.empty((len(hist), retriever.item_embeddings.shape[1]), dtype=np.float32)
    steps = None if behaviour is None else behaviour.take(order)
    queries[order] = retrieval_queries(retriever, hist[order], cats[order], steps)
    return queries


def top_candidates(
    queries: np.ndarray, item_embeddings: np.ndarray, exclude: np.ndarray, n: int, ordered: bool = False
) -> np.ndarray:
    """int64 [rows, n]: the n best items per query by dot product (unordered; `ordered`: best first, ties the lower
    index first, by the scores the selection used), never a reserved index nor an item in the row's `exclude`
    (int64 [rows, E], PAD_INDEX as filler). Batched so memory stays bounded."""
    num_items = item_embeddings.shape[0]
    if not 1 <= n <= num_items - schema.NUM_RESERVED:
        raise ValueError(f"hard_negative_pool must be in [1, {num_items - schema.NUM_RESERVED}], got {n}")
    out = np.empty((len(queries), n), dtype=np.int64)
    # One score buffer per worker for all its batches, negated in place: a fresh [rows, num_items] array per batch
    # (the matmul's, then the negation's) cost more in page faults than the selection. Same values, same selection
    # (entry for entry). The selection (argpartition) releases the GIL, so batches run on SELECT_THREADS threads.
    local = threading.local()

    def select(start: int) -> None:
        rows = slice(start, start + _MATMUL_ROWS)
        if getattr(local, "buffer", None) is None:
            local.buffer = np.empty((min(_MATMUL_ROWS, len(queries)), num_items), dtype=np.float32)
        scores = local.buffer[: len(queries[rows])]
        np.matmul(queries[rows], item_embeddings.T, out=scores)
        scores[:, : schema.NUM_RESERVED] = -np.inf
        np.put_along_axis(scores, exclude[rows], -np.inf, axis=1)
        np.negative(scores, out=scores)  # the n best = the n smallest of the negated scores
        best = np.argpartition(scores, n - 1, axis=1)[:, :n]
        chosen = np.take_along_axis(scores, best, axis=1)
        if not np.isfinite(chosen).all():
            raise ValueError(f"hard_negative_pool {n} exceeds the items left after excluding a user's own items")
        if ordered:  # negated scores: ascending is best first
            best = np.take_along_axis(best, np.lexsort((best, chosen), axis=1), axis=1)
        out[rows] = best

    with ThreadPoolExecutor(SELECT_THREADS) as pool:
        list(pool.map(select, range(0, len(queries), _MATMUL_ROWS)))
    return out


def sample_columns(
    candidates: np.ndarray, per_row: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """int64 [rows, per_row]: distinct entries of each row of `candidates`, uniformly at random, or with `weights`
    (float [columns], > 0) drawn without replacement with probability proportional to each column's weight
    (Gumbel top-k: log weight + Gumbel noise, the per_row largest)."""
    if not 1 <= per_row <= candidates.shape[1]:
        raise ValueError(f"cannot draw {per_row} distinct negatives from a pool of {candidates.shape[1]}")
    if weights is None:
        picks = np.argpartition(rng.random(candidates.shape), per_row - 1, axis=1)[:, :per_row]
    else:
        weights = np.asarray(weights, np.float64)
        if weights.shape != candidates.shape[1:] or not (weights > 0).all():
            raise ValueError(f"weights must be {candidates.shape[1]} positive numbers, one per column")
        keys = np.log(weights)[None, :] + rng.gumbel(size=candidates.shape)
        picks = np.argpartition(-keys, per_row - 1, axis=1)[:, :per_row]
    return np.take_along_axis(candidates, picks, axis=1)


NEAR_SAMPLING = ("uniform", "rank")


def rank_weights(pool: int, sampling: str) -> np.ndarray | None:
    """Column weights for sample_columns over a pool ordered best first: None (uniform) or, for "rank", 1 / (1 + r)
    at 0-based retrieval rank r (the top candidate 1, the 20th 1/20)."""
    if sampling not in NEAR_SAMPLING:
        raise ValueError(f"near_sampling must be one of {NEAR_SAMPLING}, got {sampling!r}")
    return None if sampling == "uniform" else 1.0 / (1.0 + np.arange(pool))


def user_train_items(users: np.ndarray, targets: np.ndarray, num_rows: int, row_users: np.ndarray) -> np.ndarray:
    """int64 [num_rows, M]: for each row, every target its user has in `targets` (PAD-filled to the widest)."""
    order = np.argsort(users, kind="stable")
    sorted_users, sorted_targets = users[order], targets[order]
    unique, starts, counts = np.unique(sorted_users, return_index=True, return_counts=True)
    per_user = np.full((len(unique), max(1, int(counts.max(initial=0)))), schema.PAD_INDEX, dtype=np.int64)
    per_user[np.repeat(np.arange(len(unique)), counts), np.arange(len(sorted_users)) - np.repeat(starts, counts)] = (
        sorted_targets
    )
    where = np.searchsorted(unique, row_users)
    found = (where < len(unique)) & (unique[np.minimum(where, len(unique) - 1)] == row_users)
    result = np.full((num_rows, per_user.shape[1]), schema.PAD_INDEX, dtype=np.int64)
    result[found] = per_user[where[found]]
    return result


def row_behaviour(data: RankingData):
    """The rows' event types, gaps and request gaps as serving.funnel.Behaviour, left-padded as left_padded pads the
    histories (gaps with NO_GAP), for a retriever whose query tower reads time."""
    from components.serving.funnel import Behaviour

    return Behaviour(
        left_padded(*data.sequences[schema.HIST_TYPES]),
        left_padded(*data.sequences[schema.HIST_GAPS], fill=schema.NO_GAP),
        np.asarray(data.scalars[schema.TARGET_GAP], np.int64),
    )


def hard_negative_lists(
    data: RankingData,
    retriever,
    per_row: int,
    pool: int,
    seed: int,
    near: int = 0,
    near_pool: int = 20,
    near_sampling: str = "uniform",
    gaps: bool = False,
    key: tuple[int, ...] = (),
) -> np.ndarray:
    """int64 [rows, near + per_row]: for every row, distinct items from the retriever's candidates for its history.

    With near = 0: `per_row` items drawn uniformly from the top-`pool`. With near > 0: first `near` items from the
    top-`near_pool` (the candidates the funnel re-ranks; near_sampling "uniform" or "rank", NEAR_SAMPLING), then
    `per_row` uniformly from ranks near_pool..pool. `gaps`: the query reads the rows' gaps (row_behaviour), as the
    funnel's query does at serving, when the retriever reads time; else the histories' items alone. `key` (a streamed
    split's bucket) joins `seed` in the draws' generator, so each bucket draws its own."""
    hist = left_padded(*data.sequences[schema.HIST_ITEMS])
    cats = left_padded(*data.sequences[schema.HIST_CATS])
    if hist.max() >= retriever.item_embeddings.shape[0]:
        raise ValueError("the retrieval model's vocabulary is smaller than the features': trained on other features?")
    users, targets = data.scalars[schema.USER], data.scalars[schema.TARGET_ITEM]
    bought = user_train_items(users, targets, len(targets), users)
    exclude = np.concatenate([targets[:, None], hist, bought], axis=1)
    # A small catalogue cannot fill a large pool once a user's own items are excluded; shrink the pool to what
    # every row can fill rather than fail (the tiny shop has 80 items).
    pool = min(pool, retriever.item_embeddings.shape[0] - schema.NUM_RESERVED - most_distinct_items(exclude))
    if near:
        rank_weights(near_pool, near_sampling)  # an unknown sampling fails before any work
        # a small catalogue's pool keeps room for the far draws: the near pool shrinks first, never below `near`
        near_pool = min(near_pool, pool - per_row)
    if pool < per_row or (near and near_pool < near):
        raise ValueError(f"the catalogue is too small to draw {near} near and {per_row} hard negatives per row")
    queries = encode_by_length(retriever, hist, cats, row_behaviour(data) if gaps else None)
    embeddings = np.asarray(retriever.item_embeddings, np.float32)
    candidates = top_candidates(queries, embeddings, exclude, pool, ordered=near > 0)
    rng = np.random.default_rng([seed, 7, *key])
    if not near:
        negatives = sample_columns(candidates, per_row, rng)
        log.info(
            "ranking: %d hard negatives per row from the retriever's top-%d for %d rows", per_row, pool, len(targets)
        )
        return negatives
    parts = [sample_columns(candidates[:, :near_pool], near, rng, rank_weights(near_pool, near_sampling))]
    if per_row:
        parts.append(sample_columns(candidates[:, near_pool:], per_row, rng))
    log.info(
        "ranking: %d near negatives per row from the retriever's top-%d (%s), %d from ranks %d-%d, for %d rows",
        near,
        near_pool,
        near_sampling,
        per_row,
        near_pool,
        pool,
        len(targets),
    )
    return np.concatenate(parts, axis=1)
