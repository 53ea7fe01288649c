"""The serving funnel: retrieval top-N over the whole catalogue, re-ranked by the ranker, then top-K.

Evaluation and export both call `run_funnel`, so the numbers the gate reads are the numbers of the
lists users get. Everything works on vocabulary indices of the *model's* vocabulary (index 0 = PAD,
1 = OOV, never recommended). Histories are left-padded int64 matrices, most recent item last.

Models only need the duck-typed APIs of the stage contracts:
  retriever.item_embeddings  float32 [num_items, D]    retriever.encode(hist_items, hist_cats) -> [B, D]
  ranker.item_category       int64 [num_items]         ranker.score(hist_items, hist_cats, cands, cand_cats) -> [B, N]
  ranker.retrieval_weight    optional float: when set, the final score is logit(ranker) + weight * retrieval score
A history may come with its `Behaviour` (each step's event types and gap, the request's gap since the last step),
which the funnel hands to the ranker beside the items: ranker.score(..., behaviour=...).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from components import schema

SOURCE_FUNNEL = "funnel"
SOURCE_POPULARITY = "popularity_fallback"
_BYTES_PER_CATALOGUE_CELL = 16  # float32 score + int64 argpartition index + masks, per user and item
_MAX_BATCH = 4096


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """What a history's steps were besides their items, aligned column by column with its [U, L] item matrix
    (schema.HIST_TYPES, HIST_GAPS, TARGET_GAP): event-type flags (0: unknown or padding), seconds since the step
    before, and the seconds from the last step to the request (schema.NO_GAP: none or unknown)."""

    types: np.ndarray  # int64 [U, L]
    gaps: np.ndarray  # int64 [U, L]
    request_gap: np.ndarray  # int64 [U]

    @classmethod
    def unknown(cls, hist_items: np.ndarray) -> Behaviour:
        """The behaviour of histories known by their items only."""
        shape = np.shape(hist_items)
        return cls(
            np.zeros(shape, np.int64),
            np.full(shape, schema.NO_GAP, np.int64),
            np.full(shape[0], schema.NO_GAP, np.int64),
        )

    @classmethod
    def of_examples(cls, examples: dict, max_len: int) -> Behaviour:
        """The behaviour of examples as reader.load_numpy reads them, left-padded to max_len as their histories."""
        from components.features import reader

        return cls(
            reader.pad_left(examples[schema.HIST_TYPES], max_len),
            reader.pad_left(examples[schema.HIST_GAPS], max_len, fill=schema.NO_GAP),
            np.asarray(examples[schema.TARGET_GAP], np.int64),
        )

    def take(self, rows, width: int | None = None) -> Behaviour:
        """The users at `rows`, cut to the last `width` steps as their item matrix is (None: all)."""
        columns = slice(None) if width is None else slice(-width, None)
        return Behaviour(self.types[rows, columns], self.gaps[rows, columns], self.request_gap[rows])


def append_events(items, types, gaps, last_ts: int | None, events) -> tuple[list, list, list, int | None]:
    """The steps after `events` ((item index, event-type flags, time in s), in time order) are appended: an event on
    the item of the step before joins that step (its flags OR-ed in, its time kept), as the features job collapses a
    user's repeats; any other starts a step whose gap is the seconds since the step before. Returns the steps and
    the last step's time (None: unknown)."""
    items, types, gaps = list(items), list(types), list(gaps)
    for item, flags, ts in events:
        if items and items[-1] == item and last_ts is not None:
            types[-1] |= flags
            continue
        items.append(item)
        types.append(flags)
        gaps.append(schema.NO_GAP if last_ts is None else max(ts - last_ts, 0))
        last_ts = ts
    return items, types, gaps, last_ts


class Retriever(Protocol):
    item_embeddings: np.ndarray

    def encode(self, hist_items_idx: np.ndarray, hist_cats_idx: np.ndarray) -> np.ndarray: ...


class Ranker(Protocol):
    item_category: np.ndarray

    def score(self, hist_items_idx, hist_cats_idx, cand_items_idx, cand_cats_idx, behaviour=None) -> np.ndarray: ...


def ranker_scores(ranker: Ranker, hist_items, hist_cats, candidates, cand_cats, behaviour: Behaviour | None):
    """ranker.score, handing it the behaviour only when there is one (a ranker may know items only)."""
    if behaviour is None:
        return ranker.score(hist_items, hist_cats, candidates, cand_cats)
    return ranker.score(hist_items, hist_cats, candidates, cand_cats, behaviour=behaviour)


@dataclasses.dataclass(frozen=True)
class FunnelResult:
    """Top-K per user. `items` holds PAD_INDEX (score -inf) where fewer than K items could be shown."""

    items: np.ndarray  # int64 [U, K]
    scores: np.ndarray  # float32 [U, K]
    fallback: np.ndarray  # bool [U]: True where the popularity fallback produced the list

    @property
    def sources(self) -> np.ndarray:
        return np.where(self.fallback, SOURCE_POPULARITY, SOURCE_FUNNEL)


def allowed_items(num_items: int, available: np.ndarray | None = None) -> np.ndarray:
    """bool [num_items]: which indices may be recommended; reserved indices never are.

    `available` is indexed by vocabulary index (entries 0 and 1 are ignored). Evaluation may pass
    None to rank the whole catalogue as the published protocol does; export always passes it.
    """
    allowed = np.ones(num_items, dtype=bool)
    allowed[: schema.NUM_RESERVED] = False
    if available is not None:
        available = np.asarray(available, dtype=bool)
        if available.shape != (num_items,):
            raise ValueError(f"availability has shape {available.shape}; expected ({num_items},) by item index")
        allowed &= available
    return allowed


def history_categories(item_category: np.ndarray, hist_items: np.ndarray) -> np.ndarray:
    """The category index of each history item; PAD and OOV steps keep their reserved index."""
    return np.where(hist_items > schema.OOV_INDEX, item_category[hist_items], hist_items)


def length_batches(hist_items: np.ndarray, users: np.ndarray, batch: int):
    """Yields (rows, width): `users` in batches of similar history length, each with its longest history.

    The sequence models then run over `hist_items[rows, -width:]`: all-padding columns carry nothing
    (left padding must not change a model's output), and short histories are the common case.
    """
    lengths = (hist_items[users] != schema.PAD_INDEX).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    users, lengths = users[order], lengths[order]
    for start in range(0, len(users), batch):
        yield users[start : start + batch], max(1, int(lengths[start : start + batch].max()))


def needs_fallback(hist_items: np.ndarray) -> np.ndarray:
    """bool [B]: users whose history holds no known item (empty, or only PAD/OOV)."""
    return ~(np.asarray(hist_items) >= schema.NUM_RESERVED).any(axis=1)


def batch_size_for(num_items: int, memory_budget_mb: float) -> int:
    """Users per batch so that the [B, num_items] score matrix and its temporaries fit the budget."""
    per_user = max(1, num_items) * _BYTES_PER_CATALOGUE_CELL
    return int(np.clip(memory_budget_mb * 2**20 // per_user, 1, _MAX_BATCH))


def mask_seen(
    scores: np.ndarray, hist_items: np.ndarray, seen_items: Sequence[np.ndarray] | None, keep: np.ndarray | None = None
) -> None:
    """Sets -inf, in place, on every item a user has already had (history and `seen_items`).

    keep (int64 [B], optional): one item per user that stays unmasked even if seen. Offline evaluation passes
    the target, as the published full-ranking protocol does, so that a repeated purchase is not a certain miss
    for the funnel while retrieval alone and the baselines may hit it. Serving never passes it.
    """
    rows = np.arange(len(hist_items))
    kept = None if keep is None else scores[rows, keep].copy()
    scores[rows[:, None], hist_items] = -np.inf
    if seen_items is not None:
        lengths = np.fromiter((len(s) for s in seen_items), dtype=np.int64, count=len(seen_items))
        if lengths.sum():
            flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen_items])
            scores[np.repeat(rows, lengths), flat] = -np.inf
    if keep is not None:
        restore = keep >= schema.NUM_RESERVED
        scores[rows[restore], keep[restore]] = kept[restore]


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best columns per row, best first, and their scores.

    Ties inside the top n go to the lower index; which of several items tied exactly at the cut-off
    gets in is decided by the selection algorithm (deterministic for the same input).
    """
    width = scores.shape[1]
    n = min(n, width)
    if n < width:
        part = np.argpartition(scores, width - n, axis=1)[:, width - n :]
    else:
        part = np.broadcast_to(np.arange(width), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(part_scores, order, axis=1)


def retrieval_queries(retriever: Retriever, hist_items, hist_cats, behaviour: Behaviour | None = None) -> np.ndarray:
    """float32 [B, D]: retriever.encode, handing it the behaviour only when there is one and the retriever reads
    time (reads_gaps: its query tower reads the steps' gaps and the request gap)."""
    if behaviour is None or not getattr(retriever, "reads_gaps", False):
        return np.asarray(retriever.encode(hist_items, hist_cats), dtype=np.float32)
    return np.asarray(retriever.encode(hist_items, hist_cats, behaviour=behaviour), dtype=np.float32)


def retrieval_scores(
    retriever: Retriever,
    hist_items: np.ndarray,
    hist_cats: np.ndarray,
    seen_items: Sequence[np.ndarray] | None,
    allowed: np.ndarray,
    keep: np.ndarray | None = None,
    behaviour: Behaviour | None = None,
) -> np.ndarray:
    """float32 [B, num_items]: dot products of the query with every item; -inf where not recommendable
    (seen items too, except `keep`: see mask_seen)."""
    query = retrieval_queries(retriever, hist_items, hist_cats, behaviour)
    scores = query @ retriever.item_embeddings.T
    scores += np.where(allowed, np.float32(0), np.float32(-np.inf))
    mask_seen(scores, hist_items, seen_items, keep)
    return scores


def retrieval_weight(ranker: Ranker) -> float:
    """The weight of the retrieval score in the final score (0: the ranker alone), chosen on valid at training."""
    return float(getattr(ranker, "retrieval_weight", 0.0) or 0.0)


def fuse(ranker_probabilities: np.ndarray, candidate_scores: np.ndarray, weight: float) -> np.ndarray:
    """logit(ranker probability) + weight * retrieval score: both stages' evidence in one order.

    The ranker alone re-ranks candidates it was never trained to tell apart as well as retrieval does; adding
    the retrieval score (a standard two-stage practice) keeps retrieval's ordering where the ranker is unsure.
    Probabilities are clipped so that a saturated ranker still yields finite logits.
    """
    p = np.clip(np.asarray(ranker_probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    return (np.log(p) - np.log1p(-p) + weight * np.asarray(candidate_scores, dtype=np.float64)).astype(np.float32)


def rerank(
    ranker: Ranker,
    hist_items: np.ndarray,
    hist_cats: np.ndarray,
    candidates: np.ndarray,
    candidate_valid: np.ndarray,
    k: int,
    candidate_scores: np.ndarray | None = None,
    behaviour: Behaviour | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores the candidates with the ranker and keeps the best k; invalid candidates sink to the end.

    With a ranker that has a retrieval_weight, the score is `fuse`d with the candidates' retrieval scores,
    which must then be given. Ties keep retrieval order (the candidates arrive best first), so equal
    scores fall back to the retriever's preference rather than to an arbitrary order.
    """
    cand_cats = ranker.item_category[candidates]
    scores = np.asarray(ranker_scores(ranker, hist_items, hist_cats, candidates, cand_cats, behaviour), np.float32)
    if scores.shape != candidates.shape:
        raise ValueError(f"ranker returned scores of shape {scores.shape} for candidates {candidates.shape}")
    if not np.isfinite(scores[candidate_valid]).all():
        raise ValueError("the ranker returned NaN or infinite scores for real candidates")
    weight = retrieval_weight(ranker)
    if weight:
        if candidate_scores is None or np.shape(candidate_scores) != candidates.shape:
            raise ValueError(
                "this ranker fuses retrieval scores (retrieval_weight "
                f"{weight}): pass candidate_scores of shape {candidates.shape}"
            )
        scores = fuse(scores, np.where(candidate_valid, candidate_scores, 0.0), weight)
    scores = np.where(candidate_valid, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    items = np.take_along_axis(candidates, order, axis=1)
    top_scores = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isfinite(top_scores), items, schema.PAD_INDEX), top_scores


def popularity_lists(
    popularity: np.ndarray,
    allowed: np.ndarray,
    seen_items: Sequence[np.ndarray] | None,
    hist_items: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The k most popular recommendable items per user, minus what the user already had; scores are shares."""
    popularity = np.asarray(popularity, dtype=np.float64)
    total = popularity[allowed].sum()
    share = np.where(allowed, popularity / total if total > 0 else 0.0, -np.inf).astype(np.float32)
    scores = np.tile(share, (len(hist_items), 1))
    mask_seen(scores, hist_items, seen_items)
    items, top_scores = top_n(scores, k)
    return np.where(np.isfinite(top_scores), items, schema.PAD_INDEX), top_scores


def retrieve_candidates(retriever, hist_items, hist_cats, seen_items, allowed, candidates_n, keep=None, behaviour=None):
    """Retrieval top-N per user, best first: candidate indices (PAD where fewer exist), which slots are real,
    and their retrieval scores (-inf where not real). `keep`: see mask_seen (offline evaluation only)."""
    scores = retrieval_scores(retriever, hist_items, hist_cats, seen_items, allowed, keep, behaviour)
    candidates, cand_scores = top_n(scores, candidates_n)
    valid = np.isfinite(cand_scores)
    return np.where(valid, candidates, schema.PAD_INDEX), valid, cand_scores


def run_funnel(
    retriever: Retriever,
    ranker: Ranker,
    hist_items: np.ndarray,
    seen_items: Sequence[np.ndarray] | None = None,
    *,
    candidates_n: int,
    top_k: int,
    available: np.ndarray | None = None,
    popularity: np.ndarray | None = None,
    hist_cats: np.ndarray | None = None,
    memory_budget_mb: float = 256.0,
    overlap_ranker: bool = True,
    behaviour: Behaviour | None = None,
) -> FunnelResult:
    """Top-K lists for every user: retrieval top-N (seen, reserved and unavailable items masked),
    re-ranked by the ranker; users without a known history item get the popularity list instead.

    hist_items: int64 [U, L] left-padded model vocabulary indices. seen_items: per user, further
    indices to mask (the history is always masked). hist_cats defaults to the ranker's category of
    each history item. behaviour: the histories' event types and gaps for the ranker (None: unknown). popularity (float [num_items], e.g. train counts) is needed only when some
    user falls back. Work is split into batches so the [B, num_items] score matrix fits the budget;
    users are batched by history length and each batch is cut to its longest history, so the sequence
    models do not run over columns of pure padding (left padding must not change a model's output).
    """
    hist_items = np.asarray(hist_items, dtype=np.int64)
    num_items = retriever.item_embeddings.shape[0]
    _check_inputs(hist_items, seen_items, num_items, candidates_n, top_k)
    if behaviour is not None and (
        behaviour.types.shape != hist_items.shape or behaviour.gaps.shape != hist_items.shape
    ):
        raise ValueError(f"behaviour of shape {behaviour.types.shape} for histories {hist_items.shape}")
    if hist_cats is None:
        hist_cats = history_categories(ranker.item_category, hist_items)
    allowed = allowed_items(num_items, available)
    fallback = needs_fallback(hist_items)
    if fallback.any() and popularity is None:
        raise ValueError(f"{int(fallback.sum())} user(s) have no known history item and no popularity was given")

    lists = _Lists(len(hist_items), top_k)
    batch = batch_size_for(num_items, memory_budget_mb)
    known = np.flatnonzero(~fallback)
    inputs = (hist_items, hist_cats, behaviour, seen_items)
    _funnel_lists(lists, retriever, ranker, inputs, known, allowed, candidates_n, batch, overlap_ranker)
    for rows in _batches(np.flatnonzero(fallback), batch):
        seen = None if seen_items is None else [seen_items[r] for r in rows]
        lists.put(rows, popularity_lists(popularity, allowed, seen, hist_items[rows], top_k))
    return FunnelResult(items=lists.items, scores=lists.scores, fallback=fallback)


class _Lists:
    """The output matrices, filled batch by batch."""

    def __init__(self, users: int, k: int):
        self.k = k
        self.items = np.full((users, k), schema.PAD_INDEX, dtype=np.int64)
        self.scores = np.full((users, k), -np.inf, dtype=np.float32)

    def put(self, rows: np.ndarray, got: tuple[np.ndarray, np.ndarray]) -> None:
        width = got[0].shape[1]
        self.items[rows, :width], self.scores[rows, :width] = got


def _funnel_lists(lists, retriever, ranker, inputs, users, allowed, candidates_n, batch, overlap_ranker) -> None:
    """Retrieval then re-ranking for `users`, batched by history length, each batch cut to its longest history.

    The ranker (TensorFlow) scores batch i on a worker thread while NumPy retrieves batch i+1 here:
    both release the GIL, so two cores work at once. The lists do not depend on the overlap. A call of one batch
    (every online request) has nothing to overlap and runs on the calling thread, with no thread to start.
    """
    retrieved = _retrieved_batches(retriever, *inputs, users, allowed, candidates_n, batch)
    if not overlap_ranker or len(users) <= batch:
        for rows, ranker_inputs, cand_scores, behaviour in retrieved:
            lists.put(rows, rerank(ranker, *ranker_inputs, lists.k, cand_scores, behaviour))
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ranker_thread:
        pending = None
        for rows, ranker_inputs, cand_scores, behaviour in retrieved:  # retrieved while the ranker scores the last
            if pending is not None:
                lists.put(pending[0], pending[1].result())
            pending = (rows, ranker_thread.submit(rerank, ranker, *ranker_inputs, lists.k, cand_scores, behaviour))
        if pending is not None:
            lists.put(pending[0], pending[1].result())


def _retrieved_batches(retriever, hist_items, hist_cats, behaviour, seen_items, users, allowed, candidates_n, batch):
    """Yields (rows, (hist, cats, candidates, valid), candidate_scores, behaviour) per length batch: rerank's
    inputs."""
    for rows, width in length_batches(hist_items, users, batch):
        hist, cats = hist_items[rows, -width:], hist_cats[rows, -width:]
        seen = None if seen_items is None else [seen_items[r] for r in rows]
        steps = None if behaviour is None else behaviour.take(rows, width)
        candidates, valid, cand_scores = retrieve_candidates(
            retriever, hist, cats, seen, allowed, candidates_n, behaviour=steps
        )
        yield rows, (hist, cats, candidates, valid), cand_scores, steps


def _batches(rows: np.ndarray, size: int):
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _check_inputs(hist_items, seen_items, num_items, candidates_n, top_k) -> None:
    if hist_items.ndim != 2:
        raise ValueError(f"hist_items must be a [users, length] matrix, got shape {hist_items.shape}")
    if candidates_n < 1 or top_k < 1:
        raise ValueError(f"candidates_n ({candidates_n}) and top_k ({top_k}) must be positive")
    if top_k > candidates_n:
        raise ValueError(f"top_k ({top_k}) cannot exceed candidates_n ({candidates_n})")
    if hist_items.size and (hist_items.min() < 0 or hist_items.max() >= num_items):
        raise ValueError(f"hist_items hold indices outside the model vocabulary [0, {num_items})")
    if seen_items is not None:
        if len(seen_items) != len(hist_items):
            raise ValueError(f"seen_items has {len(seen_items)} rows for {len(hist_items)} users")
        for row in seen_items:
            if len(row) and (np.min(row) < 0 or np.max(row) >= num_items):
                raise ValueError(f"seen_items hold indices outside the model vocabulary [0, {num_items})")
