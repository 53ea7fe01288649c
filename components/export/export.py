"""The export stage: score every user, replace the run day's partition, then make the model the last blessed one.

The destination write and the registry's promotion happen inside the artifact's staging, so a failure at any
step leaves no artifact and the registry's last blessed model as it was: a model is blessed once its lists are out.

Output artifact layout (a directory, written whole or not at all):
  recommendations.parquet   schema.RECOMMENDATIONS, sorted by user_id, rank
  similar_items.parquet     schema.SIMILAR_ITEMS, sorted by item_id, rank
  complementary_items.parquet  schema.COMPLEMENTARY_ITEMS (with campaign_outputs naming it), sorted by item_id, rank
  audiences.parquet         schema.AUDIENCES (with campaign_outputs naming it), by target, rank
  manifest.json             counts, parameters, timings (users_per_s) and the destination
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components import ab, atomic, registry
from components.evaluation import beam_scoring
from components.export import audiences, batch, complementary, similar, writers
from components.export import beam_scoring as export_beam
from components.export.inputs import ServingInputs, read_serving_inputs
from components.serving import funnel
from components.serving.models import ServingModel, check_layout, index_map, load_serving_model, same_vocabulary

RECOMMENDATIONS_FILE = "recommendations.parquet"
SIMILAR_ITEMS_FILE = "similar_items.parquet"
COMPLEMENTARY_ITEMS_FILE = "complementary_items.parquet"
AUDIENCES_FILE = "audiences.parquet"
CAMPAIGN_OUTPUTS = ("complementary_items", "audiences")
EVENTS_FILE = "events.parquet"  # in the extract's output
MANIFEST_FILE = "manifest.json"
DEFAULT_CANDIDATES_N = 200  # the evaluation's largest depth; its summary's export_n is usually smaller


@dataclasses.dataclass(frozen=True)
class ExportParams:
    top_k: int
    candidates_n: int
    experiment: str
    treatment_ratio: float
    model_version: str
    run_id: str
    generated_at: dt.datetime
    similar_k: int = 20
    memory_budget_mb: float = 256.0
    campaign_outputs: tuple[str, ...] = ()  # any of CAMPAIGN_OUTPUTS
    audience_targets: str = ""  # components.export.audiences.parse_targets; "" the top-selling categories
    audience_size: int = 1000
    user_scoring: str = "in_process"  # or "beam": the arms' funnels over user shards on Beam workers
    beam_args: tuple[str, ...] = ()  # that job's Beam options (the features stage's); () = two local workers

    def __post_init__(self):
        beam_scoring.check_mode(self.user_scoring)
        unknown = sorted(set(self.campaign_outputs) - set(CAMPAIGN_OUTPUTS))
        if unknown:
            raise ValueError(f"unknown campaign output(s) {unknown}; expected any of {CAMPAIGN_OUTPUTS}")
        if self.audience_size < 1:
            raise ValueError(f"audience_size must be positive, got {self.audience_size}")
        audiences.parse_targets(self.audience_targets)  # a malformed spec fails before any scoring
        if self.top_k < 1 or self.similar_k < 1:
            raise ValueError(f"top_k ({self.top_k}) and similar_k ({self.similar_k}) must be positive")
        if self.candidates_n < self.top_k:
            raise ValueError(f"candidates_n ({self.candidates_n}) must be at least top_k ({self.top_k})")
        if not self.model_version or not self.run_id:
            raise ValueError("model_version and run_id must be non-empty")
        if self.generated_at.tzinfo is None:
            raise ValueError("generated_at must be timezone-aware (UTC)")


def run_export(
    features_dir: str | Path,
    retrieval_dir: str | Path,
    ranking_dir: str | Path,
    destination: str,
    output_dir: str | Path,
    params: ExportParams,
    blessed_retrieval_dir: str | Path | None = None,
    blessed_ranking_dir: str | Path | None = None,
    blessed_model_version: str = "",
    registry_dir: str | Path | None = None,
    registered_version: str = "",
    extracted_dir: str | Path | None = None,
) -> dict:
    """Loads the models, scores every user, writes the destination tables and, with `registry_dir`, makes
    `registered_version` (registered by the evaluation) the last blessed model; the artifact appears last.

    The campaign outputs (params.campaign_outputs) read the extract's events (`extracted_dir`): complementary
    items count baskets in them, audiences take the top-selling categories from their purchases."""
    target = writers.parse_destination(destination)
    if "complementary_items" in params.campaign_outputs and not extracted_dir:
        raise ValueError("complementary_items needs the extract's output (extracted_dir) for its baskets")
    started = time.perf_counter()
    inputs = read_serving_inputs(features_dir)
    read_s = time.perf_counter() - started
    new_model = load_serving_model(retrieval_dir, ranking_dir, params.model_version)
    check_layout(new_model, inputs.item_ids, "export")
    blessed = None
    if blessed_retrieval_dir and blessed_ranking_dir:
        blessed = load_serving_model(blessed_retrieval_dir, blessed_ranking_dir, blessed_model_version or "blessed")
    load_s = time.perf_counter() - started - read_s
    folders = (
        (str(retrieval_dir), str(ranking_dir), new_model.version),
        (str(blessed_retrieval_dir), str(blessed_ranking_dir), blessed.version) if blessed else None,
    )
    tables, manifest = build_tables(inputs, new_model, blessed, params, folders=folders)
    campaign_started = time.perf_counter()
    campaign = build_campaign_tables(features_dir, extracted_dir, inputs, new_model, params)
    if campaign:
        tables.update(campaign)
        manifest["rows"].update({name.removesuffix(".parquet"): t.num_rows for name, t in campaign.items()})
        manifest["campaign_outputs"] = list(params.campaign_outputs)
        manifest["timing"]["campaign_s"] = round(time.perf_counter() - campaign_started, 3)
    writing = time.perf_counter()
    with atomic.staged_directory(output_dir, last=MANIFEST_FILE) as staging:
        for name, table in tables.items():
            pq.write_table(table, staging / name)
        # every table's partition of the day in one transaction (DuckDB) or one load job each (BigQuery)
        target.write({name.removesuffix(".parquet"): staging / name for name in tables}, params.generated_at.date())
        if registry_dir and registered_version:
            manifest["blessed"] = registry.promote(registry_dir, registered_version).to_json()
        finished = time.perf_counter()
        manifest["timing"].update(
            read_s=round(read_s, 3),
            load_models_s=round(load_s, 3),
            write_s=round(finished - writing, 3),
            total_s=round(finished - started, 3),
        )
        atomic.write_json(staging / MANIFEST_FILE, manifest)
    return manifest


def parse_campaign_outputs(value: str) -> tuple[str, ...]:
    """The pipeline parameter: comma-separated names out of CAMPAIGN_OUTPUTS ("" writes neither)."""
    names = tuple(dict.fromkeys(n.strip() for n in (value or "").split(",") if n.strip()))
    unknown = sorted(set(names) - set(CAMPAIGN_OUTPUTS))
    if unknown:
        raise ValueError(f"campaign_outputs {value!r}: unknown {unknown}; expected any of {CAMPAIGN_OUTPUTS}")
    return names


def build_tables(
    inputs: ServingInputs,
    new_model: ServingModel,
    blessed: ServingModel | None,
    params: ExportParams,
    folders: tuple[beam_scoring.ModelSpec, beam_scoring.ModelSpec | None] | None = None,
) -> tuple[dict[str, pa.Table], dict]:
    """Scores both arms and builds the two tables plus a manifest of what was done. Beam scoring
    (params.user_scoring) loads the models on its workers from `folders`: (the new model's, the blessed one's)."""
    variants = batch.assign_variants(inputs.user_ids, params.experiment, params.treatment_ratio)
    new_folders, blessed_folders = folders or (None, None)
    arms = [(new_model, new_folders, np.flatnonzero(variants == ab.TREATMENT))]
    arms.append((blessed or new_model, blessed_folders or new_folders, np.flatnonzero(variants == ab.CONTROL)))
    arms = [arm for arm in arms if len(arm[2])]
    started, cpu_started = time.perf_counter(), time.process_time()
    results = _score_arms(inputs, arms, params)
    parts, fallback_users = [], 0
    for (model, _, rows), result in zip(arms, results):
        fallback_users += int(result.fallback.sum())
        parts.append(
            batch.recommendation_table(
                inputs.user_ids[rows],
                result,
                model.item_ids,
                variant=variants[rows],
                model_version=model.version,
                run_id=params.run_id,
                generated_at=params.generated_at,
            )
        )
    score_s, score_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    recommendations = pa.concat_tables(parts).sort_by([("user_id", "ascending"), ("rank", "ascending")])
    similar_started = time.perf_counter()
    similar_table = build_similar_items(inputs, new_model, params)
    similar_s = time.perf_counter() - similar_started
    manifest = {
        "users": len(inputs.user_ids),
        "rows": {"recommendations": recommendations.num_rows, "similar_items": similar_table.num_rows},
        "variants": {v: int((variants == v).sum()) for v in ab.VARIANTS},
        "fallback_users": fallback_users,
        "model_version": params.model_version,
        "control_model_version": (blessed or new_model).version,
        "run_id": params.run_id,
        "generated_at": params.generated_at.isoformat(),
        "top_k": params.top_k,
        "candidates_n": params.candidates_n,
        "experiment": params.experiment,
        "treatment_ratio": params.treatment_ratio,
        "timing": {
            "score_s": round(score_s, 3),
            "users_per_s": round(len(inputs.user_ids) / max(score_s, 1e-9), 1),
            # CPU seconds of this process (all threads): on a shared machine wall time overstates the cost
            "score_cpu_s": round(score_cpu_s, 3),
            "users_per_cpu_s": round(len(inputs.user_ids) / max(score_cpu_s, 1e-9), 1),
            "similar_items_s": round(similar_s, 3),
        },
    }
    return {RECOMMENDATIONS_FILE: recommendations, SIMILAR_ITEMS_FILE: similar_table}, manifest


def _score_arms(inputs, arms, params: ExportParams) -> list[funnel.FunnelResult]:
    """batch.score_users of each (model, its folders, rows) arm, in this process or over user shards on Beam."""
    if params.user_scoring == "beam":
        if any(folders is None for _, folders, _ in arms):
            raise ValueError("Beam scoring loads the models on its workers: build_tables needs their folders")
        return export_beam.score_arms(
            inputs,
            [(folders, rows) for _, folders, rows in arms],
            candidates_n=params.candidates_n,
            top_k=params.top_k,
            memory_budget_mb=params.memory_budget_mb,
            beam_args=list(params.beam_args),
        )
    return [
        batch.score_users(
            model,
            inputs,
            rows,
            candidates_n=params.candidates_n,
            top_k=params.top_k,
            memory_budget_mb=params.memory_budget_mb,
        )
        for model, _, rows in arms
    ]


def build_similar_items(inputs: ServingInputs, model: ServingModel, params: ExportParams) -> pa.Table:
    """The similar-items table: each available item's nearest neighbours in retrieval's embedding space."""
    available, _ = batch.catalogue_in_model_space(model, inputs)
    neighbours, scores = similar.similar_items(
        model.retriever.item_embeddings, available, params.similar_k, params.memory_budget_mb
    )
    table = batch.similar_items_table(
        neighbours,
        scores,
        model.item_ids,
        model_version=model.version,
        run_id=params.run_id,
        generated_at=params.generated_at,
    )
    return table.sort_by([("item_id", "ascending"), ("rank", "ascending")])


def build_campaign_tables(
    features_dir, extracted_dir, inputs: ServingInputs, model: ServingModel, params: ExportParams
) -> dict[str, pa.Table]:
    """The tables params.campaign_outputs names, by the new model (the treatment arm's)."""
    tables = {}
    run_columns = {"model_version": model.version, "run_id": params.run_id, "generated_at": params.generated_at}
    available, popularity = batch.catalogue_in_model_space(model, inputs)
    events = Path(extracted_dir, EVENTS_FILE) if extracted_dir else None
    if "complementary_items" in params.campaign_outputs:
        allowed = funnel.allowed_items(model.num_items, available)
        pairs = complementary.cooccurrence(
            events, model.item_ids[allowed], complementary.CooccurrenceParams(k=params.similar_k)
        )

        def fallback(rows):
            return complementary.next_item_neighbours(
                model.retriever, model.ranker.item_category, rows, allowed, params.similar_k, params.memory_budget_mb
            )

        lists = complementary.complementary_lists(pairs, model.item_ids, params.similar_k, fallback=fallback)
        tables[COMPLEMENTARY_ITEMS_FILE] = complementary.complementary_table(lists, model.item_ids, **run_columns)
    if "audiences" in params.campaign_outputs:
        hist = inputs.hist_items
        if not same_vocabulary(inputs.item_ids, model.item_ids):
            hist = index_map(inputs.item_ids, model.item_ids)[hist]
        categories = audiences.item_categories(features_dir, len(inputs.item_ids))
        if not same_vocabulary(inputs.item_ids, model.item_ids):
            categories = categories[index_map(model.item_ids, inputs.item_ids)]
        targets = audiences.resolve_targets(
            params.audience_targets,
            model.item_ids,
            categories,
            popularity,
            available,
            audiences.category_sales(extracted_dir) if extracted_dir else None,
        )
        behaviour = inputs.behaviour(np.arange(len(inputs.user_ids)))
        scores = audiences.score_targets(model.retriever, model.ranker, hist, targets, behaviour=behaviour)
        tables[AUDIENCES_FILE] = audiences.audience_table(
            targets, inputs.user_ids, scores.ranker, params.audience_size, **run_columns
        )
    return tables
