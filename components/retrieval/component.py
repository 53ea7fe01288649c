"""The retrieval KFP component: a thin shell over components.retrieval.stage."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def retrieval(
    features: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    epochs: int = 12,
    embedding_dim: int = 128,
    seed: int = 0,
    warm_start: bool = False,
    registry_dir: str = "",
    warm_start_epochs: int = 2,
    refit_epochs: int = 2,
    train_input: str = "auto",
    valid_max_users: int = 0,
):
    """Trains the two-tower model on the features output, selects it on valid, exports it to `model`.

    warm_start: start from the last blessed model in registry_dir (items by id, new items from their features)
    for at most warm_start_epochs; without a usable parent it trains from scratch and says so.
    refit_epochs: after the selection on valid, epochs on train + valid (the valid rows as new ones), so the served
    model is trained through each user's last event before today; 0 serves the selected model as is.
    train_input: the train split in memory, or streamed from user buckets on local disk (one bucket in memory at a
    time); auto streams above 1,000,000 train examples.
    valid_max_users: the valid users each epoch's selection scores (those whose ids hash lowest), and the rankers'
    fusion weight is chosen on; 0 = every one."""
    from components import kfp_metrics
    from components.retrieval import stage

    figures = stage.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)
