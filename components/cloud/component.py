"""KFP shells of the serving model's registration and deployment; the DAG runs them only for a blessed model."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_models(
    serving_model: Input[Model],
    project: str,
    region: str,
    registry_dir: str,
    registered: Output[Artifact],
):
    """Registers the serving model as the entry endpoints deploy: in the Vertex AI Model Registry with the serving
    container and its routes, or without a project in the local registry folder that `make serve` follows."""
    from components import kfp_metrics
    from components.cloud import stage

    stage.run_register_models(**kfp_metrics.task_arguments(locals(), uris=("serving_model",)))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_model(
    registered: Input[Artifact],
    project: str,
    region: str,
    deployed: Output[Artifact],
    endpoint_name: str = "shop-recsys",
    traffic_percentage: int = 100,
    machine_type: str = "n1-standard-2",
    min_replicas: int = 1,
    max_replicas: int = 2,
):
    """Deploys the registered serving model to the endpoint (created on the first run) with traffic_percentage of
    its traffic (a canary below 100); a no-op, said in deployed.json, when nothing was uploaded."""
    from components import kfp_metrics
    from components.cloud import stage

    stage.run_deploy_model(**kfp_metrics.task_arguments(locals()))
