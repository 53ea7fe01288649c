"""Campaign audiences: for a promoted item or category, the users most likely to buy it, by the funnel's ranker.

The inverse of the recommendation list (LINE Shopping's phone, SMS and e-mail campaigns): one target, every user
scored. A user's score for an item is the ranking model's buy-or-not probability of that item after the user's
history; for a category, the highest probability over its `items_per_category` most popular available items (a
user who will buy in the category buys one of them, most likely a popular one). Users without a known item in
their history get no score (the ranker has nothing to read) and are never in an audience.

Targets: `category:<id>` or `item:<id>`, comma-separated; "" (or `top:<n>`) takes the n best-selling categories.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components import schema
from components.serving import funnel

DEFAULT_TOP_CATEGORIES = 5
TARGET_TYPES = ("item", "category")


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str  # "item" | "category"
    id: str
    candidates: np.ndarray  # int64 model item indices whose purchase is a purchase of the target


def parse_targets(spec: str) -> tuple[list[tuple[str, str]], int]:
    """([(kind, id)...], n_top): explicit targets, or none and the number of best-selling categories to take."""
    spec = (spec or "").strip()
    if not spec:
        return [], DEFAULT_TOP_CATEGORIES
    if spec.startswith("top:"):
        try:
            n = int(spec[4:])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"audience targets {spec!r}: top:<n> needs a positive n")
        return [], n
    targets = []
    for part in spec.split(","):
        kind, _, target_id = part.strip().partition(":")
        if kind not in TARGET_TYPES or not target_id:
            raise ValueError(f"audience target {part!r}: expected category:<id>, item:<id> or top:<n>")
        targets.append((kind, target_id))
    return targets, 0


def resolve_targets(
    spec: str,
    item_ids: np.ndarray,
    item_categories: np.ndarray,
    popularity: np.ndarray,
    available: np.ndarray,
    category_sales: dict[str, float] | None = None,
    items_per_category: int = 10,
) -> list[Target]:
    """The targets of `spec` in the model's item space (item_ids, item_categories as strings, by model index).

    category_sales (category -> purchases) orders the default targets; without it, the popularity sum does."""
    explicit, n_top = parse_targets(spec)
    item_categories = np.asarray(item_categories, dtype=object)
    recommendable = funnel.allowed_items(len(item_ids), available)
    if n_top:
        if category_sales is None:
            category_sales = {}
            for c, p in zip(item_categories[schema.NUM_RESERVED :], popularity[schema.NUM_RESERVED :]):
                category_sales[c] = category_sales.get(c, 0.0) + float(p)
        best = sorted(category_sales.items(), key=lambda kv: (-kv[1], kv[0]))
        explicit = [("category", c) for c, sales in best if sales > 0][:n_top]
    lookup = {item: i for i, item in enumerate(item_ids) if i >= schema.NUM_RESERVED}
    targets = []
    for kind, target_id in explicit:
        if kind == "item":
            if target_id not in lookup:
                raise ValueError(f"audience target item:{target_id}: not an item the model knows")
            targets.append(Target(kind, target_id, np.array([lookup[target_id]], dtype=np.int64)))
            continue
        members = np.flatnonzero((item_categories == target_id) & recommendable)
        if not len(members):
            raise ValueError(f"audience target category:{target_id}: no available item of the model in it")
        order = np.lexsort((members, -np.asarray(popularity)[members]))
        targets.append(Target(kind, target_id, members[order][:items_per_category]))
    return targets


@dataclasses.dataclass(frozen=True)
class AudienceScores:
    ranker: np.ndarray  # float32 [T, U]: buy-or-not probability (max over the target's items); NaN: no history
    funnel: np.ndarray  # float32 [T, U]: the funnel's fused score (ranker logit + weight * retrieval score)


def score_targets(
    retriever,
    ranker,
    hist_items: np.ndarray,
    targets: list[Target],
    batch_size: int = 1024,
    behaviour: funnel.Behaviour | None = None,
) -> AudienceScores:
    """Every user (rows of hist_items, model indices, left-padded) against every target's items in one ranker
    call per batch of users: the interest extractor runs once per user, not once per target. `behaviour` (aligned
    with hist_items: the steps' event types and gaps, the request's gap) reaches the ranker as in the funnel; None:
    unknown."""
    users = len(hist_items)
    candidates = np.concatenate([t.candidates for t in targets]).astype(np.int64)
    owner = np.repeat(np.arange(len(targets)), [len(t.candidates) for t in targets])
    ranker_scores = np.full((len(targets), users), np.nan, dtype=np.float32)
    funnel_scores = np.full((len(targets), users), np.nan, dtype=np.float32)
    known = np.flatnonzero(~funnel.needs_fallback(hist_items))
    weight = funnel.retrieval_weight(ranker)
    cand_cats = ranker.item_category[candidates]
    for rows, width in funnel.length_batches(hist_items, known, batch_size):
        hist = hist_items[rows, -width:]
        cats = funnel.history_categories(ranker.item_category, hist)
        cands = np.broadcast_to(candidates, (len(rows), len(candidates)))
        steps = None if behaviour is None else behaviour.take(rows, width)
        cand_cats_rows = np.broadcast_to(cand_cats, cands.shape)
        p = np.asarray(funnel.ranker_scores(ranker, hist, cats, cands, cand_cats_rows, steps), dtype=np.float32)
        fused = p
        if weight:
            query = funnel.retrieval_queries(retriever, hist, cats, steps)
            fused = funnel.fuse(p, query @ retriever.item_embeddings[candidates].T, weight)
        for t in range(len(targets)):
            ranker_scores[t, rows] = p[:, owner == t].max(axis=1)
            funnel_scores[t, rows] = fused[:, owner == t].max(axis=1)
    return AudienceScores(ranker_scores, funnel_scores)


def top_users(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per target row, the indices and scores of its n best users (NaN = unscored, never chosen), best first,
    ties to the lower index."""
    filled = np.where(np.isnan(scores), -np.inf, scores)
    top, top_scores = funnel.top_n(filled, n)
    return top, top_scores


def audience_table(
    targets: list[Target],
    user_ids: np.ndarray,
    scores: np.ndarray,
    n: int,
    *,
    model_version: str,
    run_id: str,
    generated_at: dt.datetime,
) -> pa.Table:
    """schema.AUDIENCES rows: each target's top-n scored users with rank 1..n (fewer where fewer were scored)."""
    top, top_scores = top_users(scores, n)
    keep = np.isfinite(top_scores)
    per_target = keep.sum(axis=1)
    rows = int(keep.sum())
    user_ids = np.asarray(user_ids, dtype=object)
    columns = {
        "target_id": np.repeat([t.id for t in targets], per_target).astype(object),
        "target_type": np.repeat([t.kind for t in targets], per_target).astype(object),
        "rank": np.concatenate([np.arange(1, c + 1, dtype=np.int64) for c in per_target] or [np.empty(0, np.int64)]),
        "user_id": user_ids[top[keep]],
        "score": top_scores[keep].astype(np.float64),
        "model_version": [model_version] * rows,
        "run_id": [run_id] * rows,
        "generated_at": pa.array([generated_at] * rows, pa.timestamp("us", tz="UTC")),
    }
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema.AUDIENCES]
    return pa.Table.from_arrays(arrays, schema=schema.AUDIENCES)


def precision_recall(scores: np.ndarray, buyers: np.ndarray, ks: dict[str, int]) -> dict[str, float]:
    """Mean over targets with at least one future buyer of precision@K and recall@K of each audience.

    scores [T, U] (NaN: not scored, ranked last), buyers bool [T, U]; ks maps a key suffix ("1%") to K."""
    result = {}
    has_buyers = buyers.any(axis=1)
    if not has_buyers.any():
        return result
    for name, k in ks.items():
        top, top_scores = top_users(scores[has_buyers], k)
        hits = np.take_along_axis(buyers[has_buyers], top, axis=1) & np.isfinite(top_scores)
        result[f"precision@{name}"] = round(float((hits.sum(axis=1) / k).mean()), 4)
        result[f"recall@{name}"] = round(float((hits.sum(axis=1) / buyers[has_buyers].sum(axis=1)).mean()), 4)
    return result


def item_categories(features_dir: str | Path, num_items: int) -> np.ndarray:
    """Category string per features item index ("" at reserved indices)."""
    table = pq.read_table(Path(features_dir, schema.ITEM_FEATURES), columns=["item_index", "category"])
    categories = np.full(num_items, "", dtype=object)
    categories[table.column("item_index").to_numpy()] = np.asarray(table.column("category").to_pylist(), object)
    return categories


def category_sales(extracted_dir: str | Path, end: dt.datetime | None = None) -> dict[str, float]:
    """Purchases per category in the extract's events (before `end`): what "top-selling" orders by."""
    from components.export.complementary import connect

    with connect() as con:
        rows = con.execute(
            "SELECT i.category, count(*) FROM read_parquet(?) e JOIN read_parquet(?) i USING (item_id) "
            "WHERE e.event_type = 'purchase' AND (? IS NULL OR e.event_ts < ?) GROUP BY 1",
            [str(Path(extracted_dir, "events.parquet")), str(Path(extracted_dir, "items.parquet")), end, end],
        ).fetchall()
    return {category: float(n) for category, n in rows}
