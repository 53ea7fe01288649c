"""`ranking_bench`: the ranking keys of the bench JSON (docs/architecture.md): DIEN against DIN (and, on the cvr task, the
trees probe), the speed reference, and on request the ablations, trained in one run on the same batches.

Each model's test AUC and GAUC come with 95% intervals from a bootstrap over test users (a user's rows are not
independent), and DIEN's differences to the others with paired intervals from the same resamples: the seed spread
shows training noise only, the intervals the test set's.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from components import metrics, schema
from components.isolation import in_fresh_process
from components.ranking import probe
from components.ranking.base import ModelConfig
from components.ranking.data import epoch_plan, planned_dataset
from components.ranking.training import (
    TrainConfig,
    build_model,
    evaluation_split,
    fit_and_measure,
    make_train_step,
    training_set,
    write_artifact,
)

VARIANTS = {"dien": ModelConfig(model_type="dien"), "din": ModelConfig(model_type="din")}
# Only with `ablations` (make bench ABLATIONS=dien_no_aux): what DIEN's parts are worth, at the cost of a model.
ABLATIONS = {"dien_no_aux": ModelConfig(model_type="dien", aux_weight=0.0)}
TREES = "trees"
BOOTSTRAP_RESAMPLES = 1000
SPEED_ROUNDS, SPEED_BATCHES = 7, 30


def interleaved_seconds(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each run in each round, the runs called in turn (a, b, a, b, ...) so that a burst of load from
    other processes falls on neighbours alike. One untimed round first (tracing, caches)."""
    seconds = {name: [] for name in runs}
    for round_index in range(rounds + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_index:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def speed_against_reference(
    train_data,
    num_items,
    num_categories,
    train_config: TrainConfig,
    item_statistics=None,
    rounds: int = SPEED_ROUNDS,
    batches: int = SPEED_BATCHES,
) -> dict:
    """DIEN (auxiliary loss included) against the two-GRU reference: fresh models trained on the same prepared
    batches, interleaved round by round. The ratio is the median over rounds of the reference's seconds over
    DIEN's in the same round, so both saw the same load."""
    train_data = dataclasses.replace(train_data, lists={})  # the pointwise step on the rows' targets
    plan = epoch_plan(train_data, train_config.batch_size, train_config.seed, 0)[:batches]
    prepared = list(planned_dataset(train_data, lambda: iter(plan)))
    examples = sum(len(rows) for rows in plan)
    runs = {}
    for name, config in (("dien", VARIANTS["dien"]), ("reference_gru", ModelConfig(model_type="reference_gru"))):
        tf.keras.utils.set_random_seed(train_config.seed)
        step = make_train_step(
            build_model(config, num_items, num_categories, item_statistics), train_config.learning_rate
        )

        def run(step=step):
            for features, labels in prepared:
                loss = step(features, labels)
            loss.numpy()

        runs[name] = run
    seconds = interleaved_seconds(runs, rounds)
    ratios = [ref / dien for dien, ref in zip(seconds["dien"], seconds["reference_gru"])]
    return {
        "dien.speed_vs_reference": statistics.median(ratios),
        "dien.speed_vs_reference_per_round": ratios,
        "reference_gru.train_examples_per_s": examples / statistics.median(seconds["reference_gru"]),
        "dien.train_examples_per_s_same_batches": examples / statistics.median(seconds["dien"]),
    }


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def add_intervals(runs: dict[str, dict], labels: dict, scores: dict, users: dict, seed: int = 0) -> None:
    """Adds auc_ci95 / gauc_ci95 bounds to each model's run and DIEN's paired differences to the others."""
    weights = metrics.user_bootstrap(np.concatenate(list(users.values())), BOOTSTRAP_RESAMPLES, seed)
    samples = {}
    for name in scores:
        if not 0 < labels[name].sum() < len(labels[name]):
            continue  # AUC undefined on this split
        samples[name] = {
            "auc": metrics.bootstrap_auc(labels[name], scores[name], weights(users[name])),
            "gauc": metrics.bootstrap_gauc(labels[name], scores[name], users[name], weights(users[name])),
        }
        for metric, values in samples[name].items():
            runs[name][f"{metric}_ci95_low"], runs[name][f"{metric}_ci95_high"] = _interval(values)
    for other in sorted(samples.keys() - {"dien"}) if "dien" in samples else ():
        for metric in ("auc", "gauc"):
            runs["dien"][f"{metric}_minus_{other}"] = runs["dien"][metric] - runs[other][metric]
            low, high = _interval(samples["dien"][metric] - samples[other][metric])
            runs["dien"][f"{metric}_minus_{other}_ci95_low"], runs["dien"][f"{metric}_minus_{other}_ci95_high"] = (
                low,
                high,
            )


def ranking_bench(
    features_dir: str,
    seeds=(0,),
    model_dirs: Mapping[int, str] | None = None,
    epochs: int = TrainConfig.epochs,
    refit_epochs: int = TrainConfig.refit_epochs,
    train_input: str = TrainConfig.train_input,
    retrieval_dirs: Mapping[int, str] | None = None,
    extracted_dir: str | None = None,
    ablations: tuple[str, ...] = (),
) -> dict:
    """{"ranking": {"dien": {...}, "din": {...}, "reference_gru": {...}, ["trees"], [ablations]}} on the test split.

    Each seed is a whole replicate of the funnel's second stage: with `retrieval_dirs` (a retrieval model per
    seed), seed s trains every variant with hard negatives from retrieval model s, and with `model_dirs` its DIEN
    is exported to model_dirs[s] (the ranking model artifact) with the fusion weight chosen on valid against
    retrieval model s, so evaluation and export of seed s use the models that were measured together. On the cvr task with
    `extracted_dir` (its events), the trees probe runs beside them on the same rows.
    """
    unknown = sorted(set(ablations) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)}")
    missing = sorted(set(seeds) - set(retrieval_dirs)) if retrieval_dirs else []
    if missing:
        raise ValueError(f"retrieval_dirs has no retrieval model for seed(s) {missing}: each seed needs its own")
    variants = {**VARIANTS, **{name: ABLATIONS[name] for name in ablations}}
    spec = schema.FeatureSpec.read(features_dir)
    # the trees probe first, in a process of its own: its rows (built from every event) and LightGBM's are returned to
    # the system before the neural rankers load their splits (at the large preset they were the stage's peak)
    probes = (
        in_fresh_process(probe.run_seeds, extracted_dir, features_dir, tuple(seeds))
        if spec.ranking_task == "cvr" and extracted_dir
        else None
    )
    user_ids = np.asarray(schema.read_vocab(features_dir, schema.USER_VOCAB))
    inputs = TrainConfig(train_input=train_input)  # valid and test in memory, or chunked where train streams
    valid_data, test_data = (evaluation_split(features_dir, split, inputs) for split in ("valid", "test"))
    runs = {name: [] for name in [*variants, *([TREES] if probes else [])]}
    speed = {}
    for seed in seeds:
        retrieval_dir = retrieval_dirs[seed] if retrieval_dirs else None
        train_config = TrainConfig(epochs=epochs, seed=seed, refit_epochs=refit_epochs, train_input=train_input)
        train_set = training_set(features_dir, train_config, retrieval_dir, valid=valid_data)
        labels, scores, users, seed_runs = {}, {}, {}, {}
        for name, config in variants.items():
            fitted = fit_and_measure(config, train_config, spec, train_set, valid_data, test_data, with_scores=True)
            seed_runs[name] = fitted.metrics
            # the test pass that gave the metrics, not a third
            scores[name], labels[name] = seed_runs[name].pop("test_scores"), seed_runs[name].pop("test_labels")
            users[name] = user_ids[seed_runs[name].pop("test_users") - schema.NUM_RESERVED]
            if model_dirs and seed in model_dirs and name == "dien":
                write_artifact(
                    fitted.model,
                    features_dir,
                    model_dirs[seed],
                    spec,
                    train_config,
                    retrieval_dir,
                    seed_runs[name],
                    selected=fitted.selected,
                )
            tf.keras.backend.clear_session()
        if not speed:
            speed = speed_against_reference(
                train_set.rows_in_memory(), spec.num_items, spec.num_categories, train_config, train_set.statistics
            )
        if probes:
            seed_runs[TREES] = probes[seed]
            scores[TREES] = seed_runs[TREES].pop("test_scores")
            labels[TREES], users[TREES] = seed_runs[TREES].pop("test_labels"), seed_runs[TREES].pop("test_users")
        add_intervals(seed_runs, labels, scores, users)
        for name, run in seed_runs.items():
            runs[name].append(run)
    result = {name: metrics.merge_seeds(values) for name, values in runs.items()}
    for key, value in speed.items():  # "dien.speed_vs_reference" -> result["dien"]["speed_vs_reference"]
        model, name = key.split(".", 1)
        result.setdefault(model, {})[name] = value
    return {"ranking": result}
