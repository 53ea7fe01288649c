"""The entries of the register and deploy tasks, which run only for a blessed model once its lists are exported."""

from __future__ import annotations

from components.cloud.endpoint import deploy_registered
from components.cloud.model_registry import register_serving_model


def run_register_models(
    serving_model: str, serving_model_uri: str, project: str, region: str, registry_dir: str, registered: str
) -> dict:
    """Registers the serving model as the entry endpoints deploy: in the Vertex AI Model Registry (which needs the
    artifact's gs:// URI) with the serving container and its routes, or without a project in the local registry
    folder that `make serve` follows. Returns registered.json's record."""
    return register_serving_model(serving_model_uri, serving_model, project, region, registry_dir, registered)


def run_deploy_model(
    registered: str,
    project: str,
    region: str,
    deployed: str,
    endpoint_name: str = "shop-recsys",
    traffic_percentage: int = 100,
    machine_type: str = "n1-standard-2",
    min_replicas: int = 1,
    max_replicas: int = 2,
) -> dict:
    """Deploys the registered serving model to the endpoint (created on the first run) with traffic_percentage of
    its traffic (a canary below 100); a no-op, said in deployed.json, when nothing was uploaded."""
    return deploy_registered(
        registered,
        project,
        region,
        deployed,
        endpoint_name=endpoint_name,
        traffic_percentage=traffic_percentage,
        machine_type=machine_type,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
    )
