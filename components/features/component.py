"""KFP shell of the features stage; the entry is components.features.stage.run (the Beam job: pipeline.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def features(
    extracted: Input[Dataset],
    features: Output[Dataset],
    metrics: Output[Metrics],
    max_len: int = 50,
    seed: int = 0,
    ranking_task: str = "auto",
    beam_args: str = "[]",
    max_examples_per_user: int = 1000,
    split: str = "leave_last_out",
    split_cut: str = "",
    split_window_days: float = 1.0,
    registry_dir: str = "",
    drift_psi_threshold: float = 0.2,
    drift_js_threshold: float = 0.1,
):
    """Builds vocabularies, retrieval/ranking TFRecords, item features and stats with Apache Beam.

    ranking_task: auto | next_item | cvr. beam_args: a JSON list of Beam pipeline options, passed
    through unchanged ("[]" = the local FnApiRunner in two processes, as the DirectRunner runs it, without
    fetching Prism; DataflowRunner options for the cloud).
    max_examples_per_user: the most train examples one user contributes, their latest (0 = no cap).
    split: leave_last_out | time. The time split trains before split_cut (ISO; "" = the extract window's end, or
    the latest event's day's end, less two windows), validates on [cut, cut + split_window_days) and tests on the
    next window. registry_dir: the blessed models; the extract's statistics are compared with the last one's
    (a schema change or an empty table fails; PSI or Jensen-Shannon distance above its threshold is drift).
    """
    from components import kfp_metrics
    from components.features import stage

    figures = stage.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)
