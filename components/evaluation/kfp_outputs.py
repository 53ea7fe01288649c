"""Turns an evaluation into the KFP outputs: Metrics scalars, ClassificationMetrics for the Vertex
console (ROC curve, confusion matrix at 0.5), the HTML report and the summary JSON."""
from __future__ import annotations

import numpy as np

from components import metrics as metric_fns
from components.evaluation import gate, stage
from components.kfp_metrics import log_metrics

ROC_POINTS = 200  # the console draws a curve, not every threshold


def log_classification(classification, labels: np.ndarray, probabilities: np.ndarray) -> None:
    fpr, tpr, thresholds = metric_fns.roc_curve(labels, probabilities)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
    finite = np.where(np.isfinite(thresholds), thresholds, 1.0 + float(np.max(probabilities, initial=0.0)))
    classification.log_roc_curve(fpr[keep].tolist(), tpr[keep].tolist(), finite[keep].tolist())
    predicted = probabilities >= 0.5
    positive = labels == 1
    matrix = [[int((~positive & ~predicted).sum()), int((~positive & predicted).sum())],
              [int((positive & ~predicted).sum()), int((positive & predicted).sum())]]
    classification.log_confusion_matrix(["no purchase", "purchase"], matrix)


def evaluate_for_pipeline(features_dir, retrieval_dir, ranking_dir, metrics, classification, report_path, summary_path,
                          *, registry_dir, candidates_n, gate_metric, gate_baselines, margin_vs_baseline,
                          margin_vs_blessed, model_version, off_policy_dir=None, gate_on_ope=False,
                          ope_estimator=gate.DEFAULT_OPE_ESTIMATOR, ope_margin=0.0, load_models=None) -> bool:
    """The component's one call. `load_models` replaces the artifact loader in tests."""
    config = stage.EvaluationConfig(
        candidates_n=candidates_n,
        gate=gate.GateConfig(metric=gate_metric, baselines=tuple(b.strip() for b in gate_baselines.split(",") if b.strip()),
                             margin_vs_baseline=margin_vs_baseline, margin_vs_blessed=margin_vs_blessed,
                             use_ope=gate_on_ope, ope_estimator=ope_estimator, ope_margin=ope_margin),
        model_version=model_version,
    )
    loader = {"load_models": load_models} if load_models else {}
    result = stage.run_evaluation(features_dir, retrieval_dir, ranking_dir, summary_path, report_path,
                                  registry_dir=registry_dir or None, config=config, off_policy_dir=off_policy_dir,
                                  **loader)
    log_metrics(metrics.log_metric, stage.flat_metrics(result.summary))
    if result.ranker_rows is not None:
        log_classification(classification, *result.ranker_rows)
    print("\n".join(result.summary["gate"]["reasons"]))
    print(result.summary["export_n_reason"])
    return bool(result.blessed)
