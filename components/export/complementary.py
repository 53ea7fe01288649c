"""Complementary items: for every item, the items bought or carted with it, next to similar items (items like it).

Co-occurrence runs in DuckDB SQL (queries/baskets.sql, queries/cooccurrence.sql) over the extracted events: a
basket is one user's cart and purchase events in one session (one UTC day where the session is unknown, as on
Taobao), and a pair's score is a shrunk lift, together / (expected + alpha), expected = n_i n_j / N: the lift for
pairs whose partners are bought often enough to expect them together, the plain count for rare partners (where one
shared basket would make a raw lift top the list).

Rare items (fewer than `min_support` baskets, or fewer than k partners) are filled from the retrieval model: the
query tower encodes the one-item history [item], and the items it scores highest are what the two-tower model
expects next after it (the candidate embeddings' cosine would give items *like* it, which similar_items already
lists). The `source` column says which rows came from where.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from components import schema
from components.serving import funnel

QUERIES = Path(__file__).parent / "queries"
METHODS = ("count", "lift", "shrunk_lift")
BASKETS = ("session", "day")
SOURCE_COOCCURRENCE = "cooccurrence"
SOURCE_EMBEDDING = "embedding"


@dataclasses.dataclass(frozen=True)
class CooccurrenceParams:
    event_types: tuple[str, ...] = ("cart", "purchase")
    basket: str = "session"
    method: str = "shrunk_lift"
    alpha: float = 1.0
    min_together: int = 1
    max_basket_items: int = 50
    k: int = 20

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown co-occurrence method {self.method!r}; expected one of {METHODS}")
        if self.basket not in BASKETS:
            raise ValueError(f"unknown basket {self.basket!r}; expected one of {BASKETS}")
        if self.k < 1 or self.min_together < 1 or self.max_basket_items < 2 or self.alpha < 0:
            raise ValueError("k and min_together must be >= 1, max_basket_items >= 2, alpha >= 0")
        if not self.event_types:
            raise ValueError("event_types must name at least one event type")


def connect():
    """An in-memory DuckDB connection in UTC (baskets' days are UTC days), no progress bar in logs."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def load_baskets(
    con,
    events: str | Path,
    params: CooccurrenceParams,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    table: str = "basket_items",
) -> None:
    """Creates the temporary table `table(basket, item_id)` of baskets.sql on `con`, for events in [start, end)."""
    sql = (QUERIES / "baskets.sql").read_text()
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS {sql}",
        {
            "events": str(events),
            "event_types": list(params.event_types),
            "start": start,
            "end": end,
            "basket": params.basket,
            "max_basket_items": params.max_basket_items,
        },
    )


def cooccurrence(
    events: str | Path,
    candidate_ids,
    params: CooccurrenceParams,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pa.Table:
    """Top-k partners per item: item_id, other_id, score, together, item_baskets, other_baskets, expected, rank.

    `candidate_ids` are the items that may be suggested (the available catalogue); events in [start, end)."""
    with connect() as con:
        load_baskets(con, events, params, start, end)
        con.register("candidate_items", pa.table({"item_id": pa.array(list(candidate_ids), pa.string())}))
        return con.execute(
            (QUERIES / "cooccurrence.sql").read_text(),
            {"min_together": params.min_together, "method": params.method, "alpha": params.alpha, "k": params.k},
        ).fetch_arrow_table()


def next_item_neighbours(
    retriever, item_category: np.ndarray, rows: np.ndarray, allowed: np.ndarray, k: int, memory_budget_mb: float = 256.0
) -> tuple[np.ndarray, np.ndarray]:
    """int64 [len(rows), k] item indices and scores: the retrieval model's top items after the one-item history
    [row] (its query tower's embedding dotted with every candidate embedding); the item itself and items not
    `allowed` never appear, missing slots hold PAD."""
    rows = np.asarray(rows, dtype=np.int64)
    items = np.full((len(rows), k), schema.PAD_INDEX, dtype=np.int64)
    scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    if not len(rows):
        return items, scores
    embeddings = np.asarray(retriever.item_embeddings, dtype=np.float32)
    batch = funnel.batch_size_for(len(embeddings), memory_budget_mb)
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        query = np.asarray(retriever.encode(part[:, None], np.asarray(item_category)[part][:, None]), np.float32)
        score = query @ embeddings.T
        score[:, ~allowed] = -np.inf
        score[np.arange(len(part)), part] = -np.inf
        top, top_scores = funnel.top_n(score, k)
        finite = np.isfinite(top_scores)
        items[start : start + len(part), : top.shape[1]] = np.where(finite, top, schema.PAD_INDEX)
        scores[start : start + len(part), : top.shape[1]] = top_scores
    return items, scores


@dataclasses.dataclass(frozen=True)
class ComplementaryLists:
    """Per item index (the model's vocabulary): up to k partner indices, scores and sources; PAD where empty."""

    items: np.ndarray  # int64 [num_items, k]
    scores: np.ndarray  # float32 [num_items, k]
    from_embedding: np.ndarray  # bool [num_items, k]


def complementary_lists(
    pairs: pa.Table,
    item_ids: np.ndarray,
    k: int,
    *,
    min_support: int = 2,
    fallback=None,
) -> ComplementaryLists:
    """Merges co-occurrence partners (`pairs` from `cooccurrence`) with a fallback for rare items.

    item_ids: the model's index -> id ("" at reserved indices). An item seen in fewer than `min_support` baskets
    keeps none of its co-occurrence partners (too few baskets to trust); every item whose list is short is filled
    by `fallback(rows) -> (indices [len(rows), k], scores)` (next_item_neighbours), skipping partners already in.
    """
    num_items = len(item_ids)
    lookup = {item: i for i, item in enumerate(item_ids) if i >= schema.NUM_RESERVED}
    items = np.full((num_items, k), schema.PAD_INDEX, dtype=np.int64)
    scores = np.full((num_items, k), -np.inf, dtype=np.float32)
    from_embedding = np.zeros((num_items, k), dtype=bool)
    filled = np.zeros(num_items, dtype=np.int64)
    columns = pairs.select(["item_id", "other_id", "score", "item_baskets", "rank"]).to_pydict()
    for item, other, score, support, _rank in zip(*columns.values()):
        row, col = lookup.get(item), lookup.get(other)
        if row is None or col is None or support < min_support or filled[row] >= k:
            continue
        items[row, filled[row]], scores[row, filled[row]] = col, score
        filled[row] += 1
    short = np.flatnonzero((filled < k) & (np.arange(num_items) >= schema.NUM_RESERVED))
    if fallback is not None and len(short):
        neighbours, neighbour_scores = fallback(short)
        for row, candidates, values in zip(short, neighbours, neighbour_scores):
            have = set(items[row, : filled[row]].tolist())
            for col, value in zip(candidates, values):
                if filled[row] >= k:
                    break
                if col < schema.NUM_RESERVED or col in have:
                    continue
                items[row, filled[row]], scores[row, filled[row]] = col, value
                from_embedding[row, filled[row]] = True
                filled[row] += 1
    return ComplementaryLists(items, scores, from_embedding)


def complementary_table(
    lists: ComplementaryLists, item_ids: np.ndarray, *, model_version: str, run_id: str, generated_at: dt.datetime
) -> pa.Table:
    """schema.COMPLEMENTARY_ITEMS rows (empty slots left out), sorted by item_id, rank."""
    num_items, k = lists.items.shape
    keep = (lists.items >= schema.NUM_RESERVED).ravel()
    keep &= np.repeat(np.arange(num_items) >= schema.NUM_RESERVED, k)
    item_ids = np.asarray(item_ids, dtype=object)
    rows = int(keep.sum())
    columns = {
        "item_id": np.repeat(item_ids, k)[keep],
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int64), num_items)[keep],
        "complementary_item_id": item_ids[lists.items.ravel()[keep]],
        "score": lists.scores.ravel()[keep].astype(np.float64),
        "source": np.where(lists.from_embedding.ravel()[keep], SOURCE_EMBEDDING, SOURCE_COOCCURRENCE),
        "model_version": [model_version] * rows,
        "run_id": [run_id] * rows,
        "generated_at": pa.array([generated_at] * rows, pa.timestamp("us", tz="UTC")),
    }
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema.COMPLEMENTARY_ITEMS]
    table = pa.Table.from_arrays(arrays, schema=schema.COMPLEMENTARY_ITEMS)
    return table.sort_by([("item_id", "ascending"), ("rank", "ascending")])
