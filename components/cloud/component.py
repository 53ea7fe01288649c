"""KFP shell of the Model Registry upload; the DAG runs it only when evaluation blessed the models."""
from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_models(
    retrieval_model: Input[Model],
    ranking_model: Input[Model],
    project: str,
    region: str,
    registered: Output[Artifact],
):
    """Uploads the retrieval index and the ranker to the Vertex AI Model Registry (no-op without a project)."""
    from components.cloud.model_registry import register_blessed

    register_blessed({"retrieval": retrieval_model.uri, "ranking": ranking_model.uri}, project, region,
                     registered.path)
