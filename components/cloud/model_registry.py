"""Uploads blessed SavedModels to the Vertex AI Model Registry, one model per role, versioned.

Each role (the retrieval index, the ranker) is one registry model with a stable id; every blessed
run adds a version under it and makes it the default, so serving follows the gate. The models are
served by Vertex's prebuilt TensorFlow container. Locally (no project) nothing is uploaded: the
blessed-model registry is then the folder evaluation keeps under the pipeline root.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from components import atomic

# The SavedModel directory inside each model artifact (see the retrieval and ranking contracts).
SERVED_SUBDIRS = {"retrieval": "index", "ranking": "saved_model"}
SERVING_TF_VERSION = "2.15"
REGISTERED_FILE = "registered.json"
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class RegisteredModel:
    role: str
    resource_name: str
    version_id: str
    artifact_uri: str


def serving_container(region: str, accelerator: str = "cpu") -> str:
    """The prebuilt TF serving image nearest `region`, from the SDK's own list."""
    from google.cloud.aiplatform import helpers

    return helpers.get_prebuilt_prediction_container_uri(
        framework="tensorflow", framework_version=SERVING_TF_VERSION, region=region, accelerator=accelerator
    )


def saved_model_uri(model_artifact_uri: str, role: str) -> str:
    """gs://... of the SavedModel directory Vertex serves for `role`."""
    if role not in SERVED_SUBDIRS:
        raise ValueError(f"unknown model role {role!r}; expected one of {sorted(SERVED_SUBDIRS)}")
    if not model_artifact_uri.startswith("gs://"):
        raise ValueError(f"the Model Registry reads models from GCS; got {model_artifact_uri!r}")
    return f"{model_artifact_uri.rstrip('/')}/{SERVED_SUBDIRS[role]}"


def upload_model(
    role: str,
    model_artifact_uri: str,
    project: str,
    region: str,
    model_id_prefix: str = "shop-recsys",
    labels: dict[str, str] | None = None,
    serving_image: str | None = None,
    credentials=None,
) -> RegisteredModel:
    """Model.upload of one SavedModel: a new default version under `<prefix>-<role>`, created on first use."""
    from google.api_core import exceptions
    from google.cloud import aiplatform

    model_id = f"{model_id_prefix}-{role}"
    if not _MODEL_ID.fullmatch(model_id):
        raise ValueError(f"model id {model_id!r} must match {_MODEL_ID.pattern}")
    parent = f"projects/{project}/locations/{region}/models/{model_id}"
    try:
        aiplatform.Model(parent, project=project, location=region, credentials=credentials)
        upload_target = {"parent_model": parent}
    except exceptions.NotFound:
        upload_target = {"model_id": model_id}
    artifact_uri = saved_model_uri(model_artifact_uri, role)
    model = aiplatform.Model.upload(
        display_name=model_id,
        artifact_uri=artifact_uri,
        serving_container_image_uri=serving_image or serving_container(region),
        is_default_version=True,
        labels={"app": "shop-recsys", "role": role, **(labels or {})},
        project=project,
        location=region,
        credentials=credentials,
        sync=True,
        **upload_target,
    )
    return RegisteredModel(role, model.resource_name, str(model.version_id), artifact_uri)


def register_blessed(
    model_uris: dict[str, str], project: str, region: str, output_dir: str | Path, labels: dict[str, str] | None = None
) -> list[RegisteredModel]:
    """Uploads every role in `model_uris` and writes registered.json into `output_dir`.

    With no project (local runs) nothing is uploaded and registered.json says so.
    """
    if not project:
        registered: list[RegisteredModel] = []
        record = {"uploaded": False, "reason": "no project: local runs keep blessed models in the local registry"}
    else:
        if not region:
            raise ValueError("the Model Registry upload needs a region besides the project")
        registered = [upload_model(role, uri, project, region, labels=labels) for role, uri in model_uris.items()]
        record = {"uploaded": True, "models": [asdict(m) for m in registered]}
    atomic.write_json(Path(output_dir, REGISTERED_FILE), record)
    return registered
