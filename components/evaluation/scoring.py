"""Scores a model pair and the baselines on the test split: target ranks, top lists and ranker scores.

Retrieval alone follows the published protocol (metrics.target_ranks: full catalogue, seen items
masked, the target itself never masked). The funnel is scored exactly as it serves, through the
building blocks of components/serving/funnel.py (retrieval top-N with seen items masked, re-ranked
by the ranker, ties in retrieval order), so the gate reads the numbers of the lists users get.

One pass at the largest N gives the funnel at every smaller N as well: the ranker scores each
candidate on its own, so re-ranking the first N' retrieval candidates keeps the relative order
that the full re-ranked list gives them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from components import baselines, metrics, schema
from components.serving import funnel, models

LIST_K = 50  # length of the lists kept for coverage and popularity bias


@dataclasses.dataclass
class ModelScores:
    """What evaluation keeps of one model pair, in today's features vocabulary."""

    retrieval: metrics.Ranks
    funnel_by_n: dict[int, metrics.Ranks]  # funnel ranks when retrieval passes the top N
    retrieval_lists: np.ndarray  # int64 [U, LIST_K], PAD where no item
    funnel_lists: np.ndarray  # int64 [U, LIST_K] at the largest N

    @property
    def funnel(self) -> metrics.Ranks:
        """The funnel's ranks at the deepest retrieval depth measured (the depth the gate compares)."""
        return self.funnel_by_n[max(self.funnel_by_n)]


@dataclasses.dataclass
class BaselineScores:
    ranks: metrics.Ranks
    lists: np.ndarray  # int64 [U, LIST_K]


def n_grid(candidates_n: int, top_k: int = 20) -> list[int]:
    """The retrieval depths the recall-vs-N curve is measured at, up to candidates_n."""
    grid = [top_k, 30, 50, 75, 100, 150, 200, 300, 500, 1000]
    return sorted({n for n in grid if top_k <= n <= candidates_n} | {candidates_n})


class _Vocabulary:
    """Maps today's features indices into a model's vocabulary and back (identity when equal)."""

    def __init__(self, today_ids: np.ndarray, model_ids: np.ndarray):
        if models.same_vocabulary(today_ids, model_ids):
            self.to_model = self.to_today = None
        else:
            self.to_model = models.index_map(today_ids, model_ids)
            self.to_today = models.index_map(model_ids, today_ids)

    def model(self, indices):
        return indices if self.to_model is None else self.to_model[indices]

    def today(self, indices):
        return indices if self.to_today is None else self.to_today[indices]


def score_model(
    model: models.ServingModel,
    hist_matrix: np.ndarray,
    seen_items: Sequence[np.ndarray],
    targets: np.ndarray,
    today_item_ids: np.ndarray,
    popularity: np.ndarray,
    candidates_n: int,
    memory_budget_mb: float = 256.0,
    behaviour: funnel.Behaviour | None = None,
) -> ModelScores:
    """Retrieval and funnel ranks of every test target, batch by batch (`behaviour`: the histories' event types and
    gaps for the ranker, aligned with hist_matrix).

    Works for today's candidate and for the last blessed model, whose vocabulary may differ:
    histories map into the model's vocabulary by item id, and a target the model never saw is a miss.
    """
    vocab = _Vocabulary(today_item_ids, model.item_ids)
    num_items = model.num_items
    model_popularity = np.zeros(num_items)
    np.add.at(model_popularity, vocab.model(np.arange(len(today_item_ids))), popularity)
    model_popularity[: schema.NUM_RESERVED] = 0
    allowed = funnel.allowed_items(num_items)
    grid = n_grid(candidates_n)
    batch = funnel.batch_size_for(num_items, memory_budget_mb / 2)
    parts: dict[str, list] = {"retrieval": [], "retrieval_lists": [], "funnel_lists": [], **{n: [] for n in grid}}
    for start in range(0, len(targets), batch):
        rows = slice(start, min(start + batch, len(targets)))
        hist = vocab.model(hist_matrix[rows])
        cats = funnel.history_categories(model.ranker.item_category, hist)
        seen = [vocab.model(np.asarray(s, dtype=np.int64)) for s in seen_items[rows]]
        target = vocab.model(targets[rows])
        known = target >= schema.NUM_RESERVED
        steps = None if behaviour is None else behaviour.take(rows)
        parts["retrieval"].append(_retrieval_ranks(model.retriever, hist, cats, seen, target, known, steps))
        cands, reranked = _funnel_lists(
            model,
            hist,
            cats,
            seen,
            np.where(known, target, schema.PAD_INDEX),
            allowed,
            model_popularity,
            candidates_n,
            steps,
        )
        for n, ranks in _funnel_ranks_by_n(cands, reranked, target, known, grid).items():
            parts[n].append(ranks)
        parts["retrieval_lists"].append(vocab.today(cands[:, :LIST_K]))
        parts["funnel_lists"].append(vocab.today(reranked[:, :LIST_K]))
    return ModelScores(
        retrieval=metrics.Ranks.concatenate(parts["retrieval"]),
        funnel_by_n={n: metrics.Ranks.concatenate(parts[n]) for n in grid},
        retrieval_lists=stack_lists(parts["retrieval_lists"]),
        funnel_lists=stack_lists(parts["funnel_lists"]),
    )


def _retrieval_ranks(retriever, hist, cats, seen, target, known, behaviour=None) -> metrics.Ranks:
    query = funnel.retrieval_queries(retriever, hist, cats, behaviour)
    scores = query @ np.asarray(retriever.item_embeddings, dtype=np.float32).T
    ranks = metrics.target_ranks(scores, np.where(known, target, schema.OOV_INDEX), seen)
    return metrics.Ranks(np.where(known, ranks.higher, -1), np.where(known, ranks.ties, 0))


def _funnel_lists(
    model, hist, cats, seen, target, allowed, popularity, candidates_n, behaviour=None
) -> tuple[np.ndarray, np.ndarray]:
    """(retrieval top-N, the same N re-ranked) as serving makes them, except that the target is never masked
    as seen (the protocol retrieval alone and the baselines are scored by); users without a known
    history item get the popularity list for both, as the serving fallback does."""
    cands, valid, cand_scores = funnel.retrieve_candidates(
        model.retriever, hist, cats, seen, allowed, candidates_n, keep=target, behaviour=behaviour
    )
    reranked, _ = funnel.rerank(
        model.ranker, hist, cats, cands, valid, k=cands.shape[1], candidate_scores=cand_scores, behaviour=behaviour
    )
    fallback = funnel.needs_fallback(hist)
    if fallback.any():
        rows = np.flatnonzero(fallback)
        popular, _ = funnel.popularity_lists(popularity, allowed, [seen[r] for r in rows], hist[rows], cands.shape[1])
        cands[rows], reranked[rows] = popular, popular
    return cands, reranked


def positions_in(candidates: np.ndarray, items: np.ndarray) -> np.ndarray:
    """int64 [B, M]: the column of each items[b, j] in candidates[b] (-1 where absent).

    Rows are made disjoint by offsetting with the row number, so one sort answers every row.
    """
    offset = int(max(candidates.max(initial=0), items.max(initial=0))) + 1
    rows = np.arange(len(candidates))[:, None] * offset
    keys = (candidates + rows).ravel()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    query = (items + rows).ravel()
    found = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    hit = sorted_keys[found] == query if len(sorted_keys) else np.zeros(len(query), bool)
    columns = order[found] % candidates.shape[1] if candidates.shape[1] else found
    return np.where(hit, columns, -1).reshape(items.shape)


def _funnel_ranks_by_n(cands, reranked, target, known, grid) -> dict[int, metrics.Ranks]:
    """The target's 0-based place in the funnel list for every retrieval depth N in `grid`."""
    in_list = (reranked == target[:, None]) & known[:, None]
    place = np.where(in_list.any(axis=1), in_list.argmax(axis=1), -1)  # in the re-ranked list at full N
    retrieval_pos = positions_in(cands, reranked)
    target_pos = np.where(place >= 0, retrieval_pos[np.arange(len(place)), np.maximum(place, 0)], -1)
    before_target = np.arange(reranked.shape[1])[None, :] < place[:, None]
    out = {}
    for n in grid:
        ahead = np.count_nonzero(before_target & (retrieval_pos >= 0) & (retrieval_pos < n), axis=1)
        present = (place >= 0) & (target_pos < n)
        out[n] = metrics.Ranks.exact(np.where(present, ahead, -1))
    return out


def stack_lists(parts: list[np.ndarray]) -> np.ndarray:
    """Chunks of top lists as one [U, width] matrix, a narrower chunk padded with PAD on the right."""
    width = max((p.shape[1] for p in parts), default=0)
    return (
        np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=schema.PAD_INDEX) for p in parts])
        if parts
        else np.zeros((0, 0), np.int64)
    )


def score_baseline(baseline, hist_items: Sequence[np.ndarray], seen_items, targets: np.ndarray) -> BaselineScores:
    """Ranks under the protocol and top lists (seen items masked) of a components.baselines model."""
    step = metrics.chunk_size(baseline.num_items)
    ranks, lists = [], []
    for start in range(0, len(targets), step):
        rows = slice(start, min(start + step, len(targets)))
        scores = np.array(baseline.score(hist_items[rows]), dtype=np.float32)
        ranks.append(metrics.target_ranks(scores, targets[rows], seen_items[rows]))
        if isinstance(baseline, baselines.Popularity):
            lists.append(_shared_score_lists(baseline.counts, seen_items[rows], LIST_K))
            continue
        scores[:, : schema.NUM_RESERVED] = -np.inf
        hist = np.zeros((len(scores), 1), np.int64)  # mask_seen masks a history too; seen already holds it
        funnel.mask_seen(scores, hist, list(seen_items[rows]))
        lists.append(top_lists(scores, LIST_K))
    return BaselineScores(ranks=metrics.Ranks.concatenate(ranks), lists=stack_lists(lists))


def _shared_score_lists(item_scores: np.ndarray, seen_items: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Top-k lists when every user shares one score vector (popularity): a user's list lies within the
    global top k + |seen| items, so only those columns are ranked instead of the whole catalogue."""
    item_scores = np.asarray(item_scores, dtype=np.float32).copy()
    item_scores[: schema.NUM_RESERVED] = -np.inf
    depth = min(len(item_scores), k + max((len(s) for s in seen_items), default=0))
    columns = np.argsort(-item_scores, kind="stable")[:depth]
    position = np.full(len(item_scores), -1)
    position[columns] = np.arange(depth)
    sub = np.tile(item_scores[columns], (len(seen_items), 1))
    lengths = np.fromiter((len(s) for s in seen_items), dtype=np.int64, count=len(seen_items))
    if lengths.sum():
        seen_positions = position[np.concatenate([np.asarray(s, dtype=np.int64) for s in seen_items])]
        user = np.repeat(np.arange(len(seen_items)), lengths)
        inside = seen_positions >= 0
        sub[user[inside], seen_positions[inside]] = -np.inf
    top = top_lists(sub, k, fill=-1)
    return np.where(top >= 0, columns[np.maximum(top, 0)], schema.PAD_INDEX)


def top_lists(scores: np.ndarray, k: int, fill: int = schema.PAD_INDEX) -> np.ndarray:
    """int64 [B, k]: the k best finite columns per row, best first, ties by lower index; `fill` where fewer.

    Same order as funnel.top_n, about three times faster on a full catalogue: a value partition
    finds each row's k-th best score, and only the few columns at or above it are sorted.
    """
    k = min(k, scores.shape[1])
    threshold = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k]
    rows, cols = np.nonzero((scores >= threshold[:, None]) & np.isfinite(scores))
    values = scores[rows, cols]
    order = np.lexsort((cols, -values, rows))
    rows, cols = rows[order], cols[order]
    place = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = place < k
    out = np.full((len(scores), k), fill, dtype=np.int64)
    out[rows[keep], place[keep]] = cols[keep]
    return out


def ranker_probabilities(ranker, ranking: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """The ranker's score for every ranking test row (target item against the row's history)."""
    from components.features import reader

    hist, cats = ranking[schema.HIST_ITEMS], ranking[schema.HIST_CATS]
    length = max((len(h) for h in hist), default=1) or 1
    behaviour = funnel.Behaviour.of_examples(ranking, length) if schema.HIST_TYPES in ranking else None
    out = []
    for start in range(0, len(hist), batch_size):
        rows = slice(start, start + batch_size)
        target = ranking[schema.TARGET_ITEM][rows].astype(np.int64)[:, None]
        target_cat = ranking[schema.TARGET_CAT][rows].astype(np.int64)[:, None]
        steps = None if behaviour is None else behaviour.take(rows)
        scores = funnel.ranker_scores(
            ranker, reader.pad_left(hist[rows], length), reader.pad_left(cats[rows], length), target, target_cat, steps
        )
        out.append(np.asarray(scores, dtype=np.float64).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)
