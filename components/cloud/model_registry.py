"""Registers the blessed serving model: the entry that endpoints deploy, with its container and routes.

On Vertex AI, the serving model folder (components.serving.bundle) is uploaded to the Model Registry under one
stable model id; every blessed run adds a version and makes it the default, so serving follows the gate. Its
container is the serving image (the component image with the prediction server as entry point), with the
server's routes and port, so Vertex sets AIP_* as the server reads them and copies the folder to
AIP_STORAGE_URI. The bare SavedModels stay pipeline artifacts.
Locally (no project) the folder is published to the local registry (`<registry>/serving/<version>`, LATEST.json),
which `make serve` follows.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from components import atomic
from components.serving import server

REGISTERED_FILE = "registered.json"
MODEL_ID = "shop-recsys-serving"
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class RegisteredModel:
    resource_name: str
    version_id: str
    artifact_uri: str
    serving_image: str


def upload_serving_model(
    artifact_uri: str,
    project: str,
    region: str,
    serving_image: str,
    model_id: str = MODEL_ID,
    labels: dict[str, str] | None = None,
    credentials=None,
) -> RegisteredModel:
    """Model.upload of the serving model folder: a new default version under `model_id`, created on first use."""
    from google.api_core import exceptions
    from google.cloud import aiplatform

    if not _MODEL_ID.fullmatch(model_id):
        raise ValueError(f"model id {model_id!r} must match {_MODEL_ID.pattern}")
    if not artifact_uri.startswith("gs://"):
        raise ValueError(f"the Model Registry reads models from GCS; got {artifact_uri!r}")
    if "/" not in serving_image.split(":")[0]:
        raise ValueError(
            f"serving image {serving_image!r} is a local name; Vertex AI pulls from a registry "
            "(build with `make images REGISTRY=REGION-docker.pkg.dev/PROJECT/REPO`)"
        )
    parent = f"projects/{project}/locations/{region}/models/{model_id}"
    try:
        aiplatform.Model(parent, project=project, location=region, credentials=credentials)
        upload_target = {"parent_model": parent}
    except exceptions.NotFound:
        upload_target = {"model_id": model_id}
    model = aiplatform.Model.upload(
        display_name=model_id,
        artifact_uri=artifact_uri.rstrip("/"),
        serving_container_image_uri=serving_image,
        serving_container_predict_route=server.PREDICT_ROUTE,
        serving_container_health_route=server.HEALTH_ROUTE,
        serving_container_ports=[server.HTTP_PORT],
        is_default_version=True,
        labels={"app": "shop-recsys", "role": "serving", **(labels or {})},
        project=project,
        location=region,
        credentials=credentials,
        sync=True,
        **upload_target,
    )
    return RegisteredModel(model.resource_name, str(model.version_id), artifact_uri.rstrip("/"), serving_image)


def register_serving_model(
    model_uri: str,
    model_path: str | Path,
    project: str,
    region: str,
    registry_dir: str,
    output_dir: str | Path,
    serving_image: str = "",
    labels: dict[str, str] | None = None,
) -> dict:
    """Uploads (with a project) or publishes locally (without) the serving model; writes registered.json.

    model_uri is the artifact's URI (gs://... in production), model_path its local or mounted path.
    """
    from components.image import serving_image as default_serving_image
    from components.serving import bundle

    version = bundle.read_serving_model(model_path).config.model_version
    if project:
        if not region:
            raise ValueError("the Model Registry upload needs a region besides the project")
        model = upload_serving_model(
            model_uri,
            project,
            region,
            serving_image or default_serving_image(),
            labels={"model-version": _label(version), **(labels or {})},
        )
        record = {"uploaded": True, "model_version": version, "model": asdict(model)}
    elif registry_dir:
        published = bundle.publish(model_path, registry_dir, version)
        record = {
            "uploaded": False,
            "model_version": version,
            "local": str(published),
            "reason": "no project: published to the local registry, which `make serve` follows",
        }
    else:
        record = {"uploaded": False, "model_version": version, "reason": "no project and no registry folder"}
    atomic.write_json(Path(output_dir, REGISTERED_FILE), record)
    return record


def _label(value: str) -> str:
    """A Vertex label value: lower case letters, digits, - and _, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]
