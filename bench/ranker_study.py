"""Which train lists make the ranker re-rank retrieval's candidates best (issue 17): DIEN trained per variant of the
train lists on one features output and one retrieval model, each judged on VALID by the funnel it makes.

    python -m bench.ranker_study --features DIR --retrieval DIR --variants default,near1_far1_pop1 --seed 0 --out F

Per variant: DIEN (ModelConfig "dien", the stage's) trained with TrainConfig(seed, **VARIANTS[name]) on the train
split with its lists (training.training_set), the best epoch on valid AUC; then on valid's users with a known history
(fusion.choose_on_split's rows): retrieval's top-N (N = fusion.CANDIDATES_N) scored by the ranker, the fusion weight
chosen as the stage chooses it (mean NDCG@10 over N), and NDCG@20 / HIT@20 of retrieval alone, of the ranker alone at
N = 20 and N = 200, and of the fused funnel at every N, with how often the target moved up or down at N = 20.
With --evaluate DIR the variant's model is also exported (with its fusion weight) to DIR/<variant> and the evaluation
stage's entry runs on it as the bench's evaluation stage does: its test figures (funnel and retrieval NDCG@20) are
the bench's, for a final check only, never to choose a variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import schema
from components.ranking.base import ModelConfig
from components.ranking.data import load_split
from components.ranking.export import Ranker as ExportedRanker
from components.ranking.export import ranker_module
from components.ranking.training import TrainConfig, build_model, train, training_set, write_artifact
from components.serving import funnel, fusion

log = logging.getLogger("ranker_study")

# Overrides of TrainConfig per variant (the shipped defaults: "default").
_NEAR = {"hard_negative_gaps": True, "near_pointwise": True}  # gap-reading train queries; _lo: near in the softmax only
VARIANTS: dict[str, dict] = {
    "default": {},
    # one hard negative from the top-100 (items-only query) + one popular item: the lists before near negatives
    "old": {"near_negatives": 0, "hard_negative_gaps": False},
    "old_gaps": {"near_negatives": 0, "hard_negative_gaps": True},
    # nNfFpP: N near (top-20), F far (ranks 20-100), P popular; _lo: near negatives in the listwise term only
    "n1f1": {**_NEAR, "near_negatives": 1, "popularity_negatives": 0},
    "n1f1p1": {**_NEAR, "near_negatives": 1},
    "n1f1p1_lo": {**_NEAR, "near_negatives": 1, "near_pointwise": False},
    "n2f1p1_lo": {**_NEAR, "near_negatives": 2, "near_pointwise": False},
    "n3f1p1_lo": {**_NEAR, "near_negatives": 3, "near_pointwise": False},
    "n2f1p1": {**_NEAR, "near_negatives": 2},
    "n1f1p1_lo_rank": {**_NEAR, "near_negatives": 1, "near_pointwise": False, "near_sampling": "rank"},
    "n2f1p1_lo_rank": {**_NEAR, "near_negatives": 2, "near_pointwise": False, "near_sampling": "rank"},
    "n2f1p1_lo_lw2": {**_NEAR, "near_negatives": 2, "near_pointwise": False, "listwise_weight": 2.0},
    "n1f1p1_lo_nogaps": {"near_negatives": 1, "near_pointwise": False, "hard_negative_gaps": False},
    "n1f1_lo": {**_NEAR, "near_negatives": 1, "popularity_negatives": 0, "near_pointwise": False},
    # far negatives from ranks 20-200 (the depth the evaluation's funnel re-ranks) instead of 20-100
    "n1f1p1_lo_f200": {**_NEAR, "near_negatives": 1, "near_pointwise": False, "hard_negative_pool": 200},
    "n1f1_lo_f200": {
        **_NEAR,
        "near_negatives": 1,
        "popularity_negatives": 0,
        "near_pointwise": False,
        "hard_negative_pool": 200,
    },
    "n2f1_lo": {**_NEAR, "near_negatives": 2, "popularity_negatives": 0, "near_pointwise": False},
    "n2f1": {**_NEAR, "near_negatives": 2, "popularity_negatives": 0},
    "n1f1_rank": {**_NEAR, "near_negatives": 1, "popularity_negatives": 0, "near_sampling": "rank"},
    "n1f2_lo": {**_NEAR, "near_negatives": 1, "hard_negatives": 2, "popularity_negatives": 0, "near_pointwise": False},
}
REPORT_K = 20


def in_memory_ranker(model, features_dir: str) -> ExportedRanker:
    """The trained model behind the exported Ranker's scoring code, without writing a SavedModel."""
    return ExportedRanker(ranker_module(model, features_dir))


def funnel_figures(candidates, probabilities, scores, targets, k: int = REPORT_K) -> dict:
    """The fusion choice (valid's rule) and NDCG@k / HIT@k of retrieval, the ranker alone and the chosen funnel."""
    chosen = fusion.choose_weight(candidates, probabilities, scores, targets)
    weight = chosen["retrieval_weight"]
    hits = candidates == targets[:, None]
    out = {"retrieval_weight": weight, "relative_weight": relative_weight(weight, probabilities, scores)}
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    out["retrieval"] = dict(zip((f"hit@{k}", f"ndcg@{k}"), fusion.hit_ndcg(first, k)))
    for n in fusion.CANDIDATES_N:
        column = np.where(hits[:, :n].any(axis=1), hits[:, :n].argmax(axis=1), -1)
        real = np.isfinite(scores[:, :n])
        rows = {}
        for name, w in (("ranker", 0.0), ("funnel", weight)):
            fused = np.where(real, funnel.fuse(probabilities[:, :n], np.where(real, scores[:, :n], 0.0), w), -np.inf)
            ranks = fusion.target_ranks(fused, column)
            rows[name] = dict(zip((f"hit@{k}", f"ndcg@{k}"), fusion.hit_ndcg(ranks, k)))
            if n == min(fusion.CANDIDATES_N):
                rows[name]["moves"] = fusion.target_moves(ranks, column)
        out[f"n{n}"] = rows
    return out


def relative_weight(weight: float, probabilities, scores) -> float:
    """The chosen weight in fusion.RELATIVE_WEIGHTS' units."""
    grid = fusion.weight_grid(probabilities, scores)
    scale = grid[1] / fusion.RELATIVE_WEIGHTS[1] if grid[1] else 0.0
    return float(weight / scale) if scale else 0.0


def run_variant(features_dir: str, retrieval_dir: str, name: str, seed: int, evaluate_dir: Path | None) -> dict:
    """Trains one variant's DIEN and returns its valid figures (and with `evaluate_dir` the evaluation stage's)."""
    from components.retrieval.model_io import load_retriever

    config = dataclasses.replace(TrainConfig(seed=seed), **VARIANTS[name])
    spec = schema.FeatureSpec.read(features_dir)
    valid = load_split(features_dir, "valid")
    started, cpu = time.perf_counter(), time.process_time()
    train_set = training_set(features_dir, config, retrieval_dir, valid=valid)
    lists_cpu_s = time.process_time() - cpu
    tf.keras.utils.set_random_seed(seed)
    model_config = ModelConfig(model_type="dien")
    model = build_model(model_config, spec.num_items, spec.num_categories, train_set.statistics)
    fit = train(model, train_set.data, config, valid)
    retriever = load_retriever(retrieval_dir)
    hist, seen, targets, behaviour = fusion.split_rows(features_dir, "valid")
    ranker = in_memory_ranker(model, features_dir)
    arrays = fusion.candidate_scores(retriever, ranker, hist, seen, targets, max(fusion.CANDIDATES_N), behaviour)
    result = {
        "variant": name,
        "seed": seed,
        "train_config": dataclasses.asdict(config),
        "list_width": int(train_set.data.lists[next(iter(train_set.data.lists))].shape[1]),
        "lists_cpu_s": lists_cpu_s,
        "train_cpu_s": fit["train_cpu_s"],
        "best_epoch": fit.get("best_epoch"),
        "valid_auc": fit.get("valid_auc"),
        "valid_auc_by_epoch": fit.get("valid_auc_by_epoch"),
        "valid_users": int(len(targets)),
        "valid": funnel_figures(*arrays, targets),
    }
    if evaluate_dir is not None:
        result["evaluation"] = evaluate_variant(model, features_dir, retrieval_dir, config, fit, evaluate_dir / name)
    result["wall_s"] = time.perf_counter() - started
    return result


def evaluate_variant(model, features_dir: str, retrieval_dir: str, config: TrainConfig, fit: dict, out: Path) -> dict:
    """Exports the model with its fusion weight and runs the evaluation stage's entry on it, as bench/stages.py does;
    returns the bench's funnel and retrieval keys (test split)."""
    from components.evaluation import stage

    spec = schema.FeatureSpec.read(features_dir)
    metrics = {key: value for key, value in fit.items() if isinstance(value, (int, float))}
    write_artifact(model, features_dir, str(out / "ranking"), spec, config, retrieval_dir, metrics)
    stage.run(
        features_dir,
        retrieval_dir,
        str(out / "ranking"),
        report=str(out / "report.html"),
        summary=str(out / "summary.json"),
    )
    keys = stage.bench_keys(schema.EvaluationSummary.read(out / "summary.json"))
    return {
        "funnel": keys["funnel"],
        "retrieval": keys["evaluation"]["retrieval"],
        "export_n": keys["evaluation"]["export_n"],
    }


def summary_line(result: dict) -> str:
    """One line per variant: valid AUC, retrieval / ranker-alone / funnel NDCG@20 at N=20 and 200, moves at N=20."""
    valid, k = result["valid"], REPORT_K
    line = (
        f"{result['variant']:<34} seed {result['seed']} auc {result['valid_auc']:.4f}  "
        f"retrieval {valid['retrieval'][f'ndcg@{k}']:.4f}  ranker n20 {valid['n20']['ranker'][f'ndcg@{k}']:.4f} "
        f"n200 {valid['n200']['ranker'][f'ndcg@{k}']:.4f}  funnel n20 {valid['n20']['funnel'][f'ndcg@{k}']:.4f} "
        f"n200 {valid['n200']['funnel'][f'ndcg@{k}']:.4f} (w {valid['relative_weight']:g})  "
        f"moves {valid['n20']['ranker']['moves']['up']}/{valid['n20']['ranker']['moves']['down']}"
    )
    if "evaluation" in result:
        ev = result["evaluation"]
        line += f"  TEST funnel {ev['funnel']['ndcg@20']:.4f} retrieval {ev['retrieval']['ndcg@20']:.4f}"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True)
    parser.add_argument("--retrieval", required=True, help="a retrieval model artifact of the same features")
    parser.add_argument("--variants", default="default", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, help="JSON lines, one per variant (appended)")
    parser.add_argument("--evaluate", type=Path, help="also export each model here and run the evaluation stage")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        result = run_variant(args.features, args.retrieval, name, args.seed, args.evaluate)
        with args.out.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        log.info("%s", summary_line(result))
        print(summary_line(result), flush=True)
        tf.keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
