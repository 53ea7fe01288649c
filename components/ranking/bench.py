"""`ranking_bench`: the ranking keys of the bench JSON (DESIGN.md), DIEN against DIN, the no-aux ablation and
the speed reference, trained in one run on the same batches."""
from __future__ import annotations

import statistics

import components  # noqa: F401
import tensorflow as tf

from components import schema
from components.ranking.base import ModelConfig
from components.ranking.data import load_split
from components.ranking.export import export_ranker
from components.ranking.training import (TrainConfig, artifact_info, build_model, compare_training_speed, evaluate,
                                         fit_fusion, train, training_set)

VARIANTS = {
    "dien": ModelConfig(model_type="dien"),
    "din": ModelConfig(model_type="din"),
    "dien_no_aux": ModelConfig(model_type="dien", aux_weight=0.0),
}
METRICS = ("auc", "gauc", "logloss", "train_examples_per_s", "infer_examples_per_s", "train_s", "valid_auc",
           "best_epoch", "epochs_run")


def _summarize(runs: list[dict]) -> dict:
    """One seed: its values. Several: the median of each metric, plus per_seed and spread (max - min)."""
    if len(runs) == 1:
        return dict(runs[0])
    summary = {name: statistics.median(run[name] for run in runs) for name in METRICS}
    summary["per_seed"] = {name: [run[name] for run in runs] for name in METRICS}
    summary["spread"] = {name: max(run[name] for run in runs) - min(run[name] for run in runs) for name in METRICS}
    return summary


def speed_against_reference(train_data, num_items, num_categories, train_config: TrainConfig) -> dict:
    """DIEN (auxiliary loss included) and the two-GRU reference, fresh models timed on the same batches."""
    models = {}
    for name, config in (("dien", VARIANTS["dien"]), ("reference_gru", ModelConfig(model_type="reference_gru"))):
        tf.keras.utils.set_random_seed(train_config.seed)
        models[name] = build_model(config, num_items, num_categories)
    speeds = compare_training_speed(models, train_data, train_config.batch_size, train_config.seed,
                                    train_config.learning_rate)
    return {"dien.speed_vs_reference": speeds["dien"] / speeds["reference_gru"],
            "reference_gru.train_examples_per_s": speeds["reference_gru"],
            "dien.train_examples_per_s_same_batches": speeds["dien"]}


def ranking_bench(features_dir: str, seeds=(0,), model_dir: str | None = None,
                  epochs: int = TrainConfig.epochs, retrieval_dir: str | None = None) -> dict:
    """{"ranking": {"dien": {...}, "din": {...}, "dien_no_aux": {...}, "reference_gru": {...}}} on the test split.

    With `model_dir`, the DIEN model of the first seed is exported there (the ranking model artifact), so
    evaluation and export use the model that was measured. With `retrieval_dir`, every variant trains with
    hard negatives from that retrieval model and the exported model gets its funnel fusion weight (chosen
    on valid), as in the pipeline.
    """
    spec = schema.FeatureSpec.read(features_dir)
    train_set = training_set(features_dir, TrainConfig(seed=seeds[0]), retrieval_dir)
    valid_data, test_data = (load_split(features_dir, split) for split in ("valid", "test"))
    runs = {name: [] for name in VARIANTS}
    for seed in seeds:
        train_config = TrainConfig(epochs=epochs, seed=seed)
        for name, config in VARIANTS.items():
            tf.keras.utils.set_random_seed(seed)
            model = build_model(config, spec.num_items, spec.num_categories, train_set.statistics)
            runs[name].append({**train(model, train_set.data, train_config, valid_data), **evaluate(model, test_data)})
            if model_dir and name == "dien" and seed == seeds[0]:
                export_ranker(model, features_dir, model_dir,
                              artifact_info(spec, train_config, retrieval_dir, runs[name][-1]))
                if retrieval_dir:
                    runs[name][-1]["retrieval_weight"] = fit_fusion(features_dir, model_dir, retrieval_dir)[
                        "retrieval_weight"]
            tf.keras.backend.clear_session()
    result = {name: _summarize(values) for name, values in runs.items()}
    speed = speed_against_reference(train_set.data, spec.num_items, spec.num_categories,
                                    TrainConfig(epochs=epochs, seed=seeds[0]))
    result["dien"]["speed_vs_reference"] = speed["dien.speed_vs_reference"]
    result["dien"]["train_examples_per_s_same_batches"] = speed["dien.train_examples_per_s_same_batches"]
    result["reference_gru"] = {"train_examples_per_s": speed["reference_gru.train_examples_per_s"]}
    return {"ranking": result}
