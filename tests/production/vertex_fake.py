"""An in-memory Vertex AI behind the generated ModelService and EndpointService clients (the transport boundary).

The real aiplatform.Model / aiplatform.Endpoint code builds every request; only the GAPIC methods it calls are
replaced. The fake keeps the state those calls change (models and versions, endpoints, deployed models and the
traffic split), so a sequence of runs can be checked as Vertex would see it.
"""

from __future__ import annotations

import contextlib
import re
from unittest import mock

from google.api_core import exceptions
from google.cloud.aiplatform_v1.services.endpoint_service import EndpointServiceClient
from google.cloud.aiplatform_v1.services.model_service import ModelServiceClient
from google.cloud.aiplatform_v1.types import endpoint as gca_endpoint
from google.cloud.aiplatform_v1.types import model as gca_model
from google.cloud.aiplatform_v1.types import model_service


def _operation(result, name: str):
    operation = mock.Mock()
    operation.result.return_value = result
    operation.operation.name = f"{name}/operations/1"
    return operation


def _copy(message):
    return type(message).deserialize(type(message).serialize(message))


class FakeVertex:
    def __init__(self):
        self.models: dict[str, gca_model.Model] = {}
        self.versions: dict[str, int] = {}
        self.uploads: list[model_service.UploadModelRequest] = []
        self.endpoints: dict[str, gca_endpoint.Endpoint] = {}
        self.deploys: list[dict] = []
        self.undeploys: list[str] = []

    # ModelService
    def get_model(self, name, **_):
        base = name.split("@")[0]
        if base not in self.models:
            raise exceptions.NotFound(f"{name} not found")
        return _copy(self.models[base])

    def upload_model(self, request, **_):
        self.uploads.append(request)
        name = request.parent_model or f"{request.parent}/models/{request.model_id}"
        self.versions[name] = self.versions.get(name, 0) + 1
        model = _copy(request.model)
        model.name, model.version_id = name, str(self.versions[name])
        model.supported_deployment_resources_types = [gca_model.Model.DeploymentResourcesType.DEDICATED_RESOURCES]
        self.models[name] = model
        return _operation(model_service.UploadModelResponse(model=name, model_version_id=model.version_id), name)

    # EndpointService
    def list_endpoints(self, request, **_):
        wanted = re.fullmatch(r'display_name="(.*)"', request.get("filter", ""))
        return [
            _copy(e)
            for e in self.endpoints.values()
            if e.name.startswith(request["parent"]) and (not wanted or e.display_name == wanted.group(1))
        ]

    def create_endpoint(self, parent, endpoint, **_):
        created = _copy(endpoint)
        created.name = f"{parent}/endpoints/{100 + len(self.endpoints)}"
        self.endpoints[created.name] = created
        return _operation(_copy(created), created.name)

    def get_endpoint(self, name, **_):
        return _copy(self.endpoints[name])

    def deploy_model(self, endpoint, deployed_model, traffic_split, **_):
        stored = self.endpoints[endpoint]
        deployed = _copy(deployed_model)
        deployed.id = f"dm{len(self.deploys) + 1}"
        self.deploys.append(
            {
                "endpoint": endpoint,
                "model": deployed.model,
                "traffic_split": dict(traffic_split),
                "machine_type": deployed.dedicated_resources.machine_spec.machine_type,
            }
        )
        split = {deployed.id if k == "0" else k: v for k, v in traffic_split.items()}
        assert sum(split.values()) == 100, split
        stored.deployed_models.append(deployed)
        stored.traffic_split.clear()
        stored.traffic_split.update(split)
        return _operation(None, endpoint)

    def undeploy_model(self, endpoint, deployed_model_id, traffic_split, **_):
        stored = self.endpoints[endpoint]
        assert not stored.traffic_split.get(deployed_model_id), "undeploying a model that still has traffic"
        self.undeploys.append(deployed_model_id)
        kept = [m for m in stored.deployed_models if m.id != deployed_model_id]
        del stored.deployed_models[:]
        stored.deployed_models.extend(kept)
        stored.traffic_split.clear()
        stored.traffic_split.update(dict(traffic_split))
        return _operation(None, endpoint)

    def deployed(self, endpoint_name: str) -> dict[str, tuple[str, int]]:
        """deployed model id -> (model resource with version, traffic %)."""
        stored = self.endpoints[endpoint_name]
        return {m.id: (m.model, stored.traffic_split.get(m.id, 0)) for m in stored.deployed_models}


@contextlib.contextmanager
def fake_vertex(monkeypatch):
    """Patches the two clients; the SDK's default credentials are anonymous (it re-reads resources without ours)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    monkeypatch.setattr(aiplatform.initializer.global_config, "_credentials", AnonymousCredentials())
    fake = FakeVertex()
    patches = [
        mock.patch.object(ModelServiceClient, name, lambda self, *a, _n=name, **k: getattr(fake, _n)(*a, **k))
        for name in ("get_model", "upload_model")
    ]
    patches += [
        mock.patch.object(EndpointServiceClient, name, lambda self, *a, _n=name, **k: getattr(fake, _n)(*a, **k))
        for name in ("list_endpoints", "create_endpoint", "get_endpoint", "deploy_model", "undeploy_model")
    ]
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield fake
