"""Turns an evaluation into the KFP outputs: Metrics scalars, ClassificationMetrics for the Vertex
console (ROC curve, confusion matrix at 0.5), the HTML report and the summary JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components import metrics as metric_fns
from components.evaluation import gate, stage
from components.kfp_metrics import log_metrics

REPORT_SUFFIX = ".html"


def report_path(report) -> str:
    """The HTML artifact's file, named report.html so that a browser opened on it renders the page. The artifact's
    URI moves with it: KFP records the URI an artifact has when the component returns, and the Vertex console
    renders the HTML artifact from that URI."""
    if not report.uri.endswith(REPORT_SUFFIX):
        report.uri += REPORT_SUFFIX
    return report.path


def ranker_name(ranking_dir: str | Path, fallback: str) -> str:
    """The model type a ranking artifact recorded (dien, din, ...), so the report names rankers as trained."""
    info = Path(ranking_dir, "ranker.json")
    if not info.exists():
        return fallback
    return json.loads(info.read_text()).get("model_config", {}).get("model_type") or fallback


ROC_POINTS = 200  # the console draws a curve, not every threshold


def log_classification(classification, labels: np.ndarray, probabilities: np.ndarray) -> None:
    fpr, tpr, thresholds = metric_fns.roc_curve(labels, probabilities)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
    finite = np.where(np.isfinite(thresholds), thresholds, 1.0 + float(np.max(probabilities, initial=0.0)))
    classification.log_roc_curve(fpr[keep].tolist(), tpr[keep].tolist(), finite[keep].tolist())
    predicted = probabilities >= 0.5
    positive = labels == 1
    matrix = [
        [int((~positive & ~predicted).sum()), int((~positive & predicted).sum())],
        [int((positive & ~predicted).sum()), int((positive & predicted).sum())],
    ]
    classification.log_confusion_matrix(["no purchase", "purchase"], matrix)


def evaluate_for_pipeline(
    features_dir,
    retrieval_dir,
    ranking_dir,
    metrics,
    classification,
    report_path,
    summary_path,
    *,
    registry_dir,
    candidates_n,
    gate_metric,
    gate_baselines,
    margin_vs_baseline,
    margin_vs_blessed,
    model_version,
    off_policy_dir=None,
    gate_on_ope=False,
    ope_estimator=gate.DEFAULT_OPE_ESTIMATOR,
    ope_margin=0.0,
    load_models=None,
    comparison_ranking_dirs=(),
    extracted_dir=None,
) -> bool:
    """The component's one call. `load_models` replaces the artifact loader in tests. `comparison_ranking_dirs`
    are rankers trained beside the candidate's (the DIN baseline), named in the report by their model type."""
    config = stage.EvaluationConfig(
        candidates_n=candidates_n,
        gate=gate.GateConfig(
            metric=gate_metric,
            baselines=tuple(b.strip() for b in gate_baselines.split(",") if b.strip()),
            margin_vs_baseline=margin_vs_baseline,
            margin_vs_blessed=margin_vs_blessed,
            use_ope=gate_on_ope,
            ope_estimator=ope_estimator,
            ope_margin=ope_margin,
        ),
        model_version=model_version,
    )
    loader = {"load_models": load_models} if load_models else {}
    candidate = ranker_name(ranking_dir, "ranker")
    comparisons = {}
    for index, directory in enumerate(comparison_ranking_dirs):
        name = ranker_name(directory, f"ranker_{index + 2}")
        comparisons[name if name not in comparisons and name != candidate else f"{name}_{index + 2}"] = directory
    result = stage.run_evaluation(
        features_dir,
        retrieval_dir,
        ranking_dir,
        summary_path,
        report_path,
        registry_dir=registry_dir or None,
        config=config,
        off_policy_dir=off_policy_dir,
        comparison_rankers=comparisons,
        extracted_dir=extracted_dir,
        candidate_ranker=candidate,
        **loader,
    )
    log_metrics(metrics.log_metric, stage.flat_metrics(result.summary))
    if result.ranker_rows is not None:
        log_classification(classification, *result.ranker_rows)
    summary = result.summary
    print(
        f"evaluation: {'BLESSED' if result.blessed else 'NOT BLESSED'}: funnel {summary['gate']['metric']} "
        f"{summary['gate']['candidate']:.4f} on {summary['users']} test users"
    )
    print("\n".join(summary["gate"]["reasons"]))
    print(summary["export_n_reason"])
    return bool(result.blessed)
