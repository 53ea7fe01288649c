"""KFP shell of the evaluation stage: returns `blessed` for `dsl.If`; everything else is in artifacts.

`summary` (JSON at summary.path) carries export_n, model_version and previous_blessed for export.
`report` is report.html (its URI ends in .html). `off_policy` (optional) is the off-policy evaluation stage's
report: its estimates go into the report and the metrics, and with `gate_on_ope` into the gate.
`baseline_ranking_model` (optional, the DIN baseline) is scored beside the candidate for the report, never gated;
`extracted` (optional) gives the report the source and window; `campaign` (optional) is the campaign evaluation's
folder: complementary items' and audiences' held-out figures (components.export.campaign_eval). `user_scoring`
"beam" scores the users in shards on Beam with `beam_args` (the features stage's: Dataflow in production).
`max_users` above 0 scores only that many test users, those whose ids hash lowest (the same users every run).
"""

from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluation(
    features: Input[Dataset],
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[HTML],
    summary: Output[Artifact],
    registry_dir: str = "",
    candidates_n: int = 200,
    gate_metric: str = "ndcg@20",
    gate_baselines: str = "popularity,item_to_item",
    margin_vs_baseline: float = 0.0,
    margin_vs_blessed: float = 0.0,
    model_version: str = "",
    gate_on_ope: bool = False,
    ope_estimator: str = "mrdr",
    ope_margin: float = 0.0,
    off_policy: Optional[Input[Artifact]] = None,
    baseline_ranking_model: Optional[Input[Model]] = None,
    extracted: Optional[Input[Dataset]] = None,
    campaign: Optional[Input[Artifact]] = None,
    gate_on_drift: bool = False,
    user_scoring: str = "in_process",
    beam_args: str = "[]",
    max_users: int = 0,
) -> bool:
    """Scores the candidate against the baselines and the last blessed model and returns the gate's `blessed`."""
    from components import kfp_metrics
    from components.evaluation import stage

    figures = stage.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures, classification)
    return figures["blessed"] == 1.0
