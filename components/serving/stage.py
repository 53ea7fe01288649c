"""The serving-model stage's entry: the folder the prediction server loads (bundle.py), built from the blessed
run's artifacts with the export's parameters, so that a served list is the exported one."""

from __future__ import annotations

import dataclasses

from components import schema
from components.export.export import DEFAULT_CANDIDATES_N
from components.serving import bundle


def run(
    features: str,
    retrieval_model: str,
    ranking_model: str,
    evaluation_summary: str,
    model: str,
    model_version: str,
    top_k: int = 20,
    candidates_n: int = 0,
    experiment: str = "ranker",
    treatment_ratio: float = 1.0,
) -> dict:
    """Writes the serving model to `model` and returns its configuration. The evaluation summary gives what the
    export takes from it: the depth (export_n, when candidates_n is 0), the model version and the last blessed
    model for the control arm."""
    summary = schema.EvaluationSummary.read(evaluation_summary)
    config = bundle.build_serving_model(
        features,
        retrieval_model,
        ranking_model,
        model,
        model_version=model_version or summary.model_version,
        top_k=top_k,
        candidates_n=candidates_n if candidates_n > 0 else summary.export_n or DEFAULT_CANDIDATES_N,
        experiment=experiment,
        treatment_ratio=treatment_ratio,
        control=summary.previous_blessed.to_json() if summary.previous_blessed else None,
    )
    return dataclasses.asdict(config)
