"""Deploys the registered serving model to a Vertex AI endpoint, with a traffic split for canaries.

One endpoint (found by display name) serves the shop; the first run creates it. The new version gets
`traffic_percentage` of the traffic. Below 100 (a canary), the deployed model that carried the most traffic keeps
the rest; every other deployed model, left without traffic, is undeployed, so that the endpoint holds at most
two models and a roll-back is one traffic change.
"""

from __future__ import annotations

import json
from pathlib import Path

from components import atomic
from components.cloud.model_registry import REGISTERED_FILE

DEPLOYED_FILE = "deployed.json"


def find_or_create_endpoint(name: str, project: str, region: str, credentials=None):
    """The oldest endpoint with display name `name`, or a new one."""
    from google.cloud import aiplatform

    found = aiplatform.Endpoint.list(
        filter=f'display_name="{name}"',
        order_by="create_time",
        project=project,
        location=region,
        credentials=credentials,
    )
    if found:
        return found[0]
    return aiplatform.Endpoint.create(
        display_name=name,
        labels={"app": "shop-recsys"},
        project=project,
        location=region,
        credentials=credentials,
        sync=True,
    )


def traffic_split_for(current: dict[str, int], traffic_percentage: int) -> dict[str, int]:
    """The split to deploy with: "0" is the model being deployed (the SDK's key for it)."""
    if not 1 <= traffic_percentage <= 100:
        raise ValueError(f"traffic_percentage must be in 1..100, got {traffic_percentage}")
    serving = {k: v for k, v in current.items() if v > 0}
    if traffic_percentage == 100 or not serving:
        return {"0": 100}
    incumbent = max(sorted(serving), key=lambda k: serving[k])
    return {"0": traffic_percentage, incumbent: 100 - traffic_percentage}


def deploy_serving_model(
    model_resource_name: str,
    project: str,
    region: str,
    *,
    endpoint_name: str,
    traffic_percentage: int = 100,
    machine_type: str = "n1-standard-2",
    min_replicas: int = 1,
    max_replicas: int = 2,
    credentials=None,
) -> dict:
    """Deploys the model version to the endpoint and undeploys the models left without traffic; returns a record."""
    from google.cloud import aiplatform

    endpoint = find_or_create_endpoint(endpoint_name, project, region, credentials)
    before = {m.id for m in endpoint.list_models()}
    split = traffic_split_for(dict(endpoint.traffic_split or {}), traffic_percentage)
    model = aiplatform.Model(model_resource_name, project=project, location=region, credentials=credentials)
    model.deploy(
        endpoint=endpoint,
        deployed_model_display_name=model.display_name,
        traffic_split=split,
        machine_type=machine_type,
        min_replica_count=min_replicas,
        max_replica_count=max_replicas,
        sync=True,
    )
    new = [m.id for m in endpoint.list_models() if m.id not in before]
    undeployed = [
        m.id for m in endpoint.list_models() if m.id not in new and not (endpoint.traffic_split or {}).get(m.id)
    ]
    for deployed_model_id in undeployed:
        endpoint.undeploy(deployed_model_id, sync=True)
    return {
        "deployed": True,
        "endpoint": endpoint.resource_name,
        "model": model_resource_name,
        "deployed_model_id": new[0] if new else None,
        "traffic_split": dict(endpoint.traffic_split),
        "undeployed": undeployed,
    }


def deploy_registered(
    registered_path: str | Path, project: str, region: str, output_dir: str | Path, **options
) -> dict:
    """Deploys what the register step uploaded (its registered.json); writes deployed.json either way."""
    record = json.loads(Path(registered_path, REGISTERED_FILE).read_text())
    if record.get("uploaded"):
        model = record["model"]
        result = deploy_serving_model(f"{model['resource_name']}@{model['version_id']}", project, region, **options)
    else:
        result = {
            "deployed": False,
            "reason": "nothing uploaded to the Model Registry (local run): " + record.get("reason", ""),
        }
    atomic.write_json(Path(output_dir, DEPLOYED_FILE), result)
    return result
