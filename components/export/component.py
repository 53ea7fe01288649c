"""KFP shell of the export stage; the logic lives in components.export.export."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(
    features: Input[Dataset],
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    recommendations: Output[Dataset],
    metrics: Output[Metrics],
    destination: str,
    run_id: str,
    evaluation_summary: Optional[Input[Artifact]] = None,
    extracted: Optional[Input[Dataset]] = None,
    top_k: int = 20,
    candidates_n: int = 0,
    experiment: str = "ranker",
    treatment_ratio: float = 1.0,
    model_version: str = "",
    run_time: str = "",
    job_create_time: str = "",
    similar_k: int = 20,
    registry_dir: str = "",
    campaign_outputs: str = "",
    audience_targets: str = "",
    audience_size: int = 1000,
    user_scoring: str = "in_process",
    beam_args: str = "[]",
):
    """Scores every user, writes recommendations and similar items to `destination` (replacing the run day's
    partition), then makes the model the evaluation registered the last blessed one in `registry_dir`.

    destination: duckdb:///abs/path/file.duckdb or bigquery://project.dataset. candidates_n 0 takes the
    evaluation summary's export_n (else 200); the summary's previous_blessed model serves the control arm.
    run_time (ISO, the run's own time), else job_create_time (the pipeline job's, for a schedule's runs; see
    components.run_time.of_run), else now, fixes generated_at and so the partition day: a retry of the run
    replaces its own partition. campaign_outputs (comma-separated: complementary_items, audiences) adds
    those tables, built from the extract's events (`extracted`), to the same day's write; audience_targets
    (category:<id>, item:<id>, or "" / top:<n> for the best-selling categories), audience_size users each.
    user_scoring "beam" scores the users in shards on Beam with `beam_args` (the features stage's: Dataflow).
    """
    from components import kfp_metrics
    from components.export import stage

    figures = stage.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def campaign_evaluation(
    features: Input[Dataset],
    extracted: Input[Dataset],
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    report: Output[Artifact],
    metrics: Output[Metrics],
    campaign_outputs: str = "complementary_items,audiences",
):
    """Held-out figures of the campaign outputs by the candidate models: complementary items' HIT@10 on the baskets
    after the cut, audiences' precision and recall at 1% and 10% of the users on a time split's test window.
    `report` is a folder holding campaign.json, which the evaluation stage reads into its report."""
    from components import kfp_metrics
    from components.export import campaign_eval

    figures = campaign_eval.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)
