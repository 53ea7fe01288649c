"""Batch scoring for export: each A/B arm through its model's funnel, then the rows of the output tables.

The treatment arm gets the new model's lists; the control arm keeps the last blessed model's lists,
re-scored on today's histories (through item ids, because its vocabulary is older). Without a
blessed model both arms get the new model, and `model_version` on each row says which model served it.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from components import ab, schema
from components.export.inputs import ServingInputs
from components.serving import funnel
from components.serving.models import ServingModel, index_map, same_vocabulary


def score_users(
    model: ServingModel,
    inputs: ServingInputs,
    rows: np.ndarray,
    *,
    candidates_n: int,
    top_k: int,
    memory_budget_mb: float = 256.0,
) -> funnel.FunnelResult:
    """The funnel for the users at `rows` of `inputs`; item indices in the result are the model's."""
    hist, seen = inputs.hist_items[rows], [inputs.seen_items[r] for r in rows]
    if not same_vocabulary(inputs.item_ids, model.item_ids):
        to_model = index_map(inputs.item_ids, model.item_ids)
        hist, seen = to_model[hist], [to_model[s] for s in seen]
    available, popularity = catalogue_in_model_space(model, inputs)
    return funnel.run_funnel(
        model.retriever,
        model.ranker,
        hist,
        seen,
        candidates_n=min(candidates_n, model.num_items),
        top_k=top_k,
        available=available,
        popularity=popularity,
        memory_budget_mb=memory_budget_mb,
        behaviour=inputs.behaviour(rows),
    )


def catalogue_in_model_space(model: ServingModel, inputs: ServingInputs) -> tuple[np.ndarray, np.ndarray]:
    """Today's availability and popularity by the model's item index; items unknown today are unavailable."""
    if same_vocabulary(inputs.item_ids, model.item_ids):
        return inputs.available, inputs.popularity
    from_model = index_map(model.item_ids, inputs.item_ids)
    known_today = from_model >= schema.NUM_RESERVED
    return known_today & inputs.available[from_model], np.where(known_today, inputs.popularity[from_model], 0.0)


def assign_variants(user_ids: np.ndarray, experiment: str, treatment_ratio: float) -> np.ndarray:
    """Each user's A/B arm, by the same hash as serving and the A/B analysis (components.ab)."""
    return ab.assign_many(user_ids, experiment, treatment_ratio)


def recommendation_table(
    user_ids: np.ndarray,
    result: funnel.FunnelResult,
    item_ids: np.ndarray,
    *,
    variant: np.ndarray,
    model_version: str,
    run_id: str,
    generated_at: dt.datetime,
) -> pa.Table:
    """schema.RECOMMENDATIONS rows for one model's lists; empty slots (PAD) are left out."""
    users, k = len(user_ids), result.items.shape[1]
    keep = (result.items >= schema.NUM_RESERVED).ravel()

    def repeat(values) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=object), k)[keep]

    columns = {
        "user_id": repeat(user_ids),
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int64), users)[keep],
        "item_id": np.asarray(item_ids, dtype=object)[result.items.ravel()[keep]],
        "score": result.scores.ravel()[keep].astype(np.float64),
        "source": repeat(result.sources),
        "variant": repeat(variant),
    }
    return _with_run_columns(columns, schema.RECOMMENDATIONS, model_version, run_id, generated_at)


def similar_items_table(
    neighbours: np.ndarray,
    scores: np.ndarray,
    item_ids: np.ndarray,
    *,
    model_version: str,
    run_id: str,
    generated_at: dt.datetime,
) -> pa.Table:
    """schema.SIMILAR_ITEMS rows, from the index matrix of `similar.similar_items`."""
    k = neighbours.shape[1]
    keep = (neighbours >= schema.NUM_RESERVED).ravel()
    item_ids = np.asarray(item_ids, dtype=object)
    columns = {
        "item_id": np.repeat(item_ids, k)[keep],
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int64), len(neighbours))[keep],
        "similar_item_id": item_ids[neighbours.ravel()[keep]],
        "score": scores.ravel()[keep].astype(np.float64),
    }
    return _with_run_columns(columns, schema.SIMILAR_ITEMS, model_version, run_id, generated_at)


def _with_run_columns(columns: dict, table_schema: pa.Schema, model_version, run_id, generated_at) -> pa.Table:
    rows = len(next(iter(columns.values())))
    columns["model_version"] = pa.array([model_version] * rows, pa.string())
    columns["run_id"] = pa.array([run_id] * rows, pa.string())
    columns["generated_at"] = pa.array([generated_at] * rows, pa.timestamp("us", tz="UTC"))
    arrays = [pa.array(columns[f.name], type=f.type) for f in table_schema]
    return pa.Table.from_arrays(arrays, schema=table_schema)
