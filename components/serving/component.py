"""KFP shell of the serving model build; the logic lives in components.serving.bundle."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def serving_model(
    features: Input[Dataset],
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    evaluation_summary: Input[Artifact],
    model: Output[Model],
    model_version: str,
    top_k: int = 20,
    candidates_n: int = 0,
    experiment: str = "ranker",
    treatment_ratio: float = 1.0,
):
    """The folder the prediction server loads: both A/B arms' models, stored histories, catalogue, settings.

    Takes the export's parameters, so that a served list is the exported one; candidates_n 0 takes the evaluation
    summary's export_n, and its previous_blessed model serves the control arm.
    """
    from components import kfp_metrics
    from components.serving import stage

    stage.run(**kfp_metrics.task_arguments(locals()))
