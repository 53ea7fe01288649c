"""Registration of the serving model and its deployment to an endpoint, through the real aiplatform code paths.

Only the generated ModelService / EndpointService methods (the transport boundary) are replaced, by the
in-memory Vertex of vertex_fake.py, which records the requests the SDK built and keeps the state they change.
"""

import dataclasses
import json

import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials

from components.cloud import endpoint
from components.cloud.model_registry import register_serving_model, upload_serving_model
from components.export.inputs import ServingInputs
from components.serving import bundle, server

from .vertex_fake import fake_vertex

PROJECT, REGION = "shop-prod", "europe-west1"
ARTIFACT = "gs://shop-prod-pipelines/pipeline-root/123/serving-model/model"
IMAGE = "europe-west1-docker.pkg.dev/shop-prod/recsys/recsys-pipeline:abc123-serving"
ENDPOINT = f"projects/{PROJECT}/locations/{REGION}/endpoints/100"


@pytest.fixture()
def vertex(monkeypatch):
    with fake_vertex(monkeypatch) as fake:
        yield fake


def write_serving_model(path, version="run-1"):
    """A minimal serving model folder (the models themselves are not read by registration)."""
    for arm in ("treatment/retrieval", "treatment/ranking"):
        (path / arm).mkdir(parents=True)
    items = np.array(["", "", "i1", "i2"], dtype=object)
    bundle.write_inputs(
        path,
        ServingInputs(
            user_ids=np.array(["u1"], dtype=object),
            hist_items=np.array([[0, 2]]),
            seen_items=[np.array([2])],
            item_ids=items,
            available=np.array([False, False, True, True]),
            popularity=np.array([0, 0, 3.0, 1.0]),
            hist_types=np.array([[0, 1]]),
            hist_gaps=np.array([[-1, -1]]),
            last_ts=np.array([100]),
            as_of=100,
        ),
    )
    config = bundle.ServingConfig(
        model_version=version,
        top_k=1,
        candidates_n=2,
        experiment="e",
        treatment_ratio=0.5,
        max_len=2,
        control_version=None,
        built_at="now",
    )
    (path / bundle.CONFIG).write_text(json.dumps(dataclasses.asdict(config)))
    return path


def test_first_upload_creates_the_serving_model_with_its_container_and_routes(vertex):
    registered = upload_serving_model(ARTIFACT, PROJECT, REGION, IMAGE, credentials=AnonymousCredentials())
    request = vertex.uploads[0]
    assert request.parent == f"projects/{PROJECT}/locations/{REGION}"
    assert request.model_id == "shop-recsys-serving" and not request.parent_model
    assert request.model.artifact_uri == ARTIFACT
    spec = request.model.container_spec
    assert spec.image_uri == IMAGE
    assert (
        (spec.predict_route, spec.health_route)
        == (server.PREDICT_ROUTE, server.HEALTH_ROUTE)
        == (server.Settings.predict_route, server.Settings.health_route)
    )
    assert [p.container_port for p in spec.ports] == [server.HTTP_PORT] == [server.Settings.port]
    assert dict(request.model.labels) == {"app": "shop-recsys", "role": "serving"}
    assert "default" in request.model.version_aliases
    assert registered.resource_name.endswith("/models/shop-recsys-serving") and registered.version_id == "1"


def test_later_uploads_add_a_default_version(vertex):
    upload_serving_model(ARTIFACT, PROJECT, REGION, IMAGE, credentials=AnonymousCredentials())
    second = upload_serving_model(
        ARTIFACT, PROJECT, REGION, IMAGE, labels={"run": "r2"}, credentials=AnonymousCredentials()
    )
    request = vertex.uploads[1]
    assert request.parent_model == f"projects/{PROJECT}/locations/{REGION}/models/shop-recsys-serving"
    assert request.model.labels["run"] == "r2" and second.version_id == "2"


def test_register_writes_what_it_uploaded(vertex, tmp_path):
    model = write_serving_model(tmp_path / "model", version="shop-recommender-20261201")
    record = register_serving_model(ARTIFACT, model, PROJECT, REGION, "", tmp_path / "out", serving_image=IMAGE)
    assert json.loads((tmp_path / "out" / "registered.json").read_text()) == record
    assert record["uploaded"] is True and record["model_version"] == "shop-recommender-20261201"
    assert record["model"]["serving_image"] == IMAGE
    assert vertex.uploads[0].model.labels["model-version"] == "shop-recommender-20261201"


def test_local_runs_publish_to_the_registry_folder_that_make_serve_follows(tmp_path):
    model = write_serving_model(tmp_path / "model", version="run-7")
    record = register_serving_model(str(model), model, "", "", str(tmp_path / "registry"), tmp_path / "out")
    assert record["uploaded"] is False and record["local"] == str(tmp_path / "registry" / "serving" / "run-7")
    latest = json.loads((tmp_path / "registry" / "serving" / "LATEST.json").read_text())
    assert latest == {"version": "run-7"}
    assert bundle.read_serving_model(record["local"]).config.model_version == "run-7"


@pytest.mark.parametrize(
    "uri, image, message",
    [
        ("/local/model", IMAGE, "reads models from GCS"),
        (ARTIFACT, "recsys-pipeline:abc-serving", "is a local name"),
    ],
)
def test_bad_model_or_image_locations_are_refused(uri, image, message):
    with pytest.raises(ValueError, match=message):
        upload_serving_model(uri, PROJECT, REGION, image)


def deploy(traffic_percentage=100):
    model = f"projects/{PROJECT}/locations/{REGION}/models/shop-recsys-serving"
    version = upload_serving_model(ARTIFACT, PROJECT, REGION, IMAGE, credentials=AnonymousCredentials()).version_id
    return endpoint.deploy_serving_model(
        f"{model}@{version}",
        PROJECT,
        REGION,
        endpoint_name="shop-recsys",
        traffic_percentage=traffic_percentage,
        credentials=AnonymousCredentials(),
    )


def test_the_first_deploy_creates_the_endpoint_and_takes_all_traffic(vertex):
    record = deploy(traffic_percentage=10)  # nothing to share traffic with yet
    assert record["endpoint"] == ENDPOINT and vertex.endpoints[ENDPOINT].display_name == "shop-recsys"
    assert vertex.deployed(ENDPOINT) == {"dm1": (vertex.deploys[0]["model"], 100)}
    assert vertex.deploys[0]["model"].endswith("/models/shop-recsys-serving@1")
    assert vertex.deploys[0]["machine_type"] == "n1-standard-2"


def test_a_canary_shares_traffic_with_the_incumbent_and_older_models_are_undeployed(vertex):
    deploy()
    deploy(traffic_percentage=20)
    assert {k: v[1] for k, v in vertex.deployed(ENDPOINT).items()} == {"dm1": 80, "dm2": 20}
    record = deploy(traffic_percentage=30)  # the incumbent (dm1, 80%) keeps the rest; dm2 goes
    assert {k: v[1] for k, v in vertex.deployed(ENDPOINT).items()} == {"dm1": 70, "dm3": 30}
    assert record["undeployed"] == ["dm2"] and record["deployed_model_id"] == "dm3"
    deploy()
    assert {k: v[1] for k, v in vertex.deployed(ENDPOINT).items()} == {"dm4": 100}
    assert len(vertex.endpoints) == 1, "later runs reuse the endpoint"


def test_deploy_after_a_local_registration_is_a_stated_no_op(tmp_path):
    (tmp_path / "registered.json").write_text(json.dumps({"uploaded": False, "reason": "no project"}))
    record = endpoint.deploy_registered(tmp_path, "", "", tmp_path / "out", endpoint_name="shop-recsys")
    assert record["deployed"] is False and "local run" in record["reason"]
    assert json.loads((tmp_path / "out" / "deployed.json").read_text()) == record


@pytest.mark.parametrize("percentage", [0, 101])
def test_a_traffic_share_outside_1_to_100_is_refused(percentage):
    with pytest.raises(ValueError, match="traffic_percentage must be in 1..100"):
        endpoint.traffic_split_for({"dm1": 100}, percentage)
