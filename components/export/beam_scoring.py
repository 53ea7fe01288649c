"""Export's user scoring on Beam: each A/B arm's funnel over user shards, on the runner evaluation's Beam scoring
uses (components/evaluation/beam_scoring.py: DirectRunner's engine locally, Dataflow with the features stage's
beam_args). Each shard runs batch.score_users, the function the in-process export runs, so both write the same
lists; the driver builds the tables from the returned lists as before."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from components.evaluation import beam_scoring
from components.export import batch
from components.export.inputs import ServingInputs
from components.serving import funnel, models


class ScoreExportShard(beam_scoring.ShardDoFn):
    """The funnel lists of one shard of users, each user by the model of its arm."""

    def __init__(
        self,
        arm_specs: list[beam_scoring.ModelSpec],
        catalogue: dict,
        candidates_n: int,
        top_k: int,
        memory_budget_mb: float,
        load_models: Callable[..., models.ServingModel],
    ):
        self.arm_specs, self.catalogue = arm_specs, catalogue
        self.candidates_n, self.top_k, self.memory_budget_mb, self.load_models = (
            candidates_n,
            top_k,
            memory_budget_mb,
            load_models,
        )

    def setup(self):
        loaded: dict[beam_scoring.ModelSpec, models.ServingModel] = {}
        for retrieval, ranking, version in dict.fromkeys(self.arm_specs):
            local = (beam_scoring.local_folder(retrieval), beam_scoring.local_folder(ranking), version)
            loaded[(retrieval, ranking, version)] = self.load_models(*local)
        self.models = [loaded[spec] for spec in self.arm_specs]

    def score(self, arrays):
        inputs = ServingInputs(
            user_ids=arrays["user_ids"],
            hist_items=arrays["hist_items"],
            seen_items=list(beam_scoring.unpack_ragged(arrays, "seen_items")),
            hist_types=arrays["hist_types"],
            hist_gaps=arrays["hist_gaps"],
            last_ts=arrays["last_ts"],
            **self.catalogue,
        )
        out = {}
        for arm, model in enumerate(self.models):
            rows = np.flatnonzero(arrays["arm"] == arm)
            out[f"{arm}.rows"] = rows
            if not len(rows):
                continue
            result = batch.score_users(
                model,
                inputs,
                rows,
                candidates_n=self.candidates_n,
                top_k=self.top_k,
                memory_budget_mb=self.memory_budget_mb,
            )
            out.update(
                {f"{arm}.items": result.items, f"{arm}.scores": result.scores, f"{arm}.fallback": result.fallback}
            )
        return out


def score_arms(
    inputs: ServingInputs,
    arms: list[tuple[beam_scoring.ModelSpec, np.ndarray]],
    *,
    candidates_n: int,
    top_k: int,
    memory_budget_mb: float,
    beam_args: list[str],
    load_models: Callable[..., models.ServingModel] = models.load_serving_model,
    users_per_shard: int = beam_scoring.USERS_PER_SHARD,
) -> list[funnel.FunnelResult]:
    """batch.score_users of every arm ((model pair, its rows of `inputs`)), computed over user shards on Beam;
    one FunnelResult per arm, its users in the order of its rows."""
    arm_of = np.full(len(inputs.user_ids), -1, dtype=np.int64)
    for index, (_, rows) in enumerate(arms):
        arm_of[rows] = index
    bounds = beam_scoring.shard_bounds(len(arm_of), users_per_shard)
    shards = [
        {
            "user_ids": np.asarray(inputs.user_ids[a:b], dtype=str),
            "hist_items": inputs.hist_items[a:b],
            "hist_types": inputs.hist_types[a:b],
            "hist_gaps": inputs.hist_gaps[a:b],
            "last_ts": inputs.last_ts[a:b],
            "arm": arm_of[a:b],
            **beam_scoring.pack_ragged("seen_items", inputs.seen_items[a:b]),
        }
        for a, b in bounds
    ]
    catalogue = {
        "item_ids": inputs.item_ids,
        "available": inputs.available,
        "popularity": inputs.popularity,
        "as_of": inputs.as_of,
    }
    dofn = ScoreExportShard([spec for spec, _ in arms], catalogue, candidates_n, top_k, memory_budget_mb, load_models)
    parts = beam_scoring.run_shards(shards, dofn, beam_args, "export-scoring")
    results = []
    for index, (_, rows) in enumerate(arms):
        scored = [(start, part) for (start, _), part in zip(bounds, parts) if len(part[f"{index}.rows"])]
        got = np.concatenate([start + part[f"{index}.rows"] for start, part in scored]) if scored else rows[:0]
        if not np.array_equal(got, rows):
            raise RuntimeError(f"the Beam export scored other users for arm {index} than were asked")
        if not scored:
            results.append(funnel.FunnelResult(np.zeros((0, top_k), np.int64), np.zeros((0, top_k)), np.zeros(0, bool)))
            continue
        results.append(
            funnel.FunnelResult(
                items=np.concatenate([part[f"{index}.items"] for _, part in scored]),
                scores=np.concatenate([part[f"{index}.scores"] for _, part in scored]),
                fallback=np.concatenate([part[f"{index}.fallback"] for _, part in scored]),
            )
        )
    return results
