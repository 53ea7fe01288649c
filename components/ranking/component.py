"""KFP shell of the ranking stage: trains DIN or DIEN on the features output and exports the ranking model."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ranking(
    features: Input[Dataset],
    model_type: str,
    epochs: int,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
    retrieval_model: Optional[Input[Model]] = None,
    warm_start: bool = False,
    registry_dir: str = "",
    warm_start_epochs: int = 2,
    train_input: str = "auto",
    refit_epochs: int = 2,
):
    """Trains `model_type` ('dien' | 'din'), writes the ranking model artifact, logs test auc/gauc/logloss.
    With `retrieval_model`, trains on its candidates as hard negatives and stores the funnel's fusion weight.
    warm_start: start from the last blessed ranker in registry_dir when it is a model_type (items by id) for at
    most min(epochs, warm_start_epochs); without a usable parent it trains from scratch and says so.
    train_input: the train split in memory, or streamed from user buckets on local disk (one bucket in memory at a
    time, its hard negatives drawn for it alone); auto streams above 1,000,000 train rows.
    refit_epochs: after the epoch is selected on valid, epochs on the valid steps plus a 0.2 replay of train, so the
    served ranker is trained through each user's last step before the test window; 0 serves the selected model."""
    from components import kfp_metrics
    from components.ranking import stage

    figures = stage.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)
