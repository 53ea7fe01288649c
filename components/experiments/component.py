"""KFP shells of the experiments; the logic lives in components.experiments.stage."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ab_analysis(
    warehouse_uri: str,
    analysis: Output[Artifact],
    metrics: Output[Metrics],
    experiment: str = "ranker",
    treatment_ratio: float = 0.5,
    assignments_table: str = "",
):
    """CTR/CVR per A/B arm with intervals, z-tests and the sample-ratio-mismatch chi-square (analysis.json).

    assignments_table: a table with user_id, variant (the export's predictions table); "" buckets every user
    with impressions as the export does (local DuckDB only)."""
    from components import kfp_metrics
    from components.experiments import stage

    figures = stage.run_ab_analysis(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def off_policy_evaluation(
    warehouse_uri: str,
    shop_preset: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
    shop_seed: int = 0,
    repeats: int = 5,
    requests_per_log: int = 20000,
    epsilon: float = 0.1,
    bandit_rounds: int = 120,
    features: Optional[Input[Dataset]] = None,
    ranking_model: Optional[Input[Model]] = None,
    reward_weighting: str = "click",
    bandit_study: bool = True,
):
    """IPS/SNIPS/DM/DR/MRDR estimates of the new ranker's click rate beside the simulator's truth, and the
    bandit's reward curves (ope.json and PNGs, shown in the evaluation report); skipped.json for warehouses without impressions.
    With features and ranking_model the new policy is the pipeline's ranker, else a linear stand-in.
    reward_weighting (components.experiments.rewards: "click", "score" or explicit weights): what the simulated
    bandits learn, and, other than click, a second OPE study of that reward. bandit_study: run the simulated
    bandit study (3 seeds; the pipeline passes enable_bandit)."""
    from components import kfp_metrics
    from components.experiments import stage

    figures = stage.run_off_policy_evaluation(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def bandit_reranker(
    features: Input[Dataset],
    extracted: Input[Dataset],
    retrieval_model: Input[Model],
    bandit_model: Output[Model],
    metrics: Output[Metrics],
    noise_variance: float = 0.25,
    prior_precision: float = 1.0,
    exploration: float = 1.0,
    reward_weighting: str = "click",
):
    """A Thompson-sampling re-ranker (Bayesian linear over retrieval embeddings) and a Bayesian factorization
    machine (user, item, category, hour of day; Laplace posterior) warm-started from the logged impressions,
    rewarded by reward_weighting: posterior.npz, fm_posterior.npz, bandit.json, summary.json and saved_model/
    (the linear one: query, items, scores -> mean, thompson)."""
    from components import kfp_metrics
    from components.experiments import stage

    figures = stage.run_bandit_reranker(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)
