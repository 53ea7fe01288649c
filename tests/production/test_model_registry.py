"""Model Registry upload through the real aiplatform.Model.upload code path.

Only the generated ModelServiceClient methods (the transport boundary) are replaced: get_model answers
NotFound or an existing model, upload_model records the UploadModelRequest the SDK built.
"""
import json
from unittest import mock

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform_v1.services.model_service import ModelServiceClient
from google.cloud.aiplatform_v1.types import model as gca_model
from google.cloud.aiplatform_v1.types import model_service

from components.cloud.model_registry import register_blessed, saved_model_uri, upload_model

PROJECT, REGION = "shop-prod", "europe-west1"
ARTIFACT = "gs://shop-prod-pipelines/pipeline-root/123/ranking/model"


class FakeModelService:
    def __init__(self, existing: set[str]):
        self.existing = existing
        self.uploads: list[model_service.UploadModelRequest] = []

    def get_model(self, client, name, retry=None, **_):
        base = name.split("@")[0]
        if base not in self.existing:
            raise exceptions.NotFound(f"{name} not found")
        return gca_model.Model(name=base, display_name=base.rsplit("/", 1)[1], version_id="2")

    def upload_model(self, client, request, timeout=None, **_):
        self.uploads.append(request)
        name = request.parent_model or f"{request.parent}/models/{request.model_id}"
        self.existing.add(name)
        operation = mock.Mock()
        operation.result.return_value = model_service.UploadModelResponse(model=name, model_version_id="2")
        operation.operation.name = f"{name}/operations/1"
        return operation


@pytest.fixture()
def service(monkeypatch):
    """The fake service; the SDK's default credentials are anonymous (it re-reads the model without ours)."""
    from google.cloud import aiplatform

    monkeypatch.setattr(aiplatform.initializer.global_config, "_credentials", AnonymousCredentials())
    fake = FakeModelService(existing=set())
    with mock.patch.object(ModelServiceClient, "get_model", lambda self, *a, **k: fake.get_model(self, *a, **k)), \
            mock.patch.object(ModelServiceClient, "upload_model", lambda self, *a, **k: fake.upload_model(self, *a, **k)):
        yield fake


def test_first_upload_creates_the_model_with_tf_serving(service):
    registered = upload_model("ranking", ARTIFACT, PROJECT, REGION, credentials=AnonymousCredentials())
    request = service.uploads[0]
    assert request.parent == f"projects/{PROJECT}/locations/{REGION}"
    assert request.model_id == "shop-recsys-ranking" and not request.parent_model
    assert request.model.artifact_uri == ARTIFACT + "/saved_model"
    assert request.model.container_spec.image_uri == "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    assert dict(request.model.labels) == {"app": "shop-recsys", "role": "ranking"}
    assert "default" in request.model.version_aliases
    assert registered.resource_name.endswith("/models/shop-recsys-ranking") and registered.version_id == "2"


def test_later_uploads_add_a_default_version(service):
    service.existing.add(f"projects/{PROJECT}/locations/{REGION}/models/shop-recsys-retrieval")
    upload_model("retrieval", ARTIFACT, PROJECT, REGION, labels={"run": "r1"}, credentials=AnonymousCredentials())
    request = service.uploads[0]
    assert request.parent_model == f"projects/{PROJECT}/locations/{REGION}/models/shop-recsys-retrieval"
    assert request.model.artifact_uri == ARTIFACT + "/index"
    assert request.model.labels["run"] == "r1"


def test_register_blessed_writes_what_it_uploaded(service, tmp_path):
    models = register_blessed({"retrieval": ARTIFACT, "ranking": ARTIFACT}, PROJECT, REGION, tmp_path / "out")
    record = json.loads((tmp_path / "out" / "registered.json").read_text())
    assert record["uploaded"] is True and [m["role"] for m in record["models"]] == ["retrieval", "ranking"]
    assert len(service.uploads) == 2 == len(models)


def test_local_runs_upload_nothing(tmp_path):
    assert register_blessed({"ranking": "/tmp/model"}, "", "", tmp_path) == []
    assert json.loads((tmp_path / "registered.json").read_text())["uploaded"] is False


@pytest.mark.parametrize("uri, role, message", [
    ("/local/model", "ranking", "reads models from GCS"),
    (ARTIFACT, "candidate", "unknown model role"),
])
def test_bad_model_locations_are_refused(uri, role, message):
    with pytest.raises(ValueError, match=message):
        saved_model_uri(uri, role)
