"""The prediction server over real HTTP on loopback: Vertex AI's contract (routes, variables, body shapes)."""

import pytest

from components.serving import bundle
from components.serving.server import Settings

from .conftest import TOP_K, LiveServer


@pytest.fixture(scope="module")
def registry(tiny_shop, tmp_path_factory):
    """A local registry whose LATEST is the tiny shop's serving model, as the register step leaves it."""
    root = tmp_path_factory.mktemp("registry")
    bundle.publish(tiny_shop.serving_model, root, "v1-dien")
    return root / bundle.SERVING


@pytest.fixture(scope="module")
def live(registry):
    settings = Settings(storage_uri=str(registry), reload_interval_s=0, max_instances=8, max_body_bytes=4096)
    with LiveServer(settings) as server:
        server.wait_ready()
        yield server


def test_contract_routes_and_shapes(live, exported_lists):
    user = sorted(exported_lists)[0]
    status, health = live.request("GET", "/health")
    assert status == 200 and health == {"status": "ready", "model_version": "v1-dien"}
    status, body = live.predict({"instances": [{"user_id": user}, {"user_id": user, "k": 2}]})
    assert status == 200 and list(body) == ["predictions"] and len(body["predictions"]) == 2
    first = body["predictions"][0]
    assert set(first) == {"items", "scores", "source", "variant", "model_version", "ignored_items"}
    assert first["items"] == exported_lists[user]["items"] and len(first["items"]) == len(first["scores"]) == TOP_K
    assert body["predictions"][1]["items"] == first["items"][:2]
    assert live.request("GET", "/predict")[0] == 405


def test_routes_and_port_come_from_vertex_variables(registry):
    env = {
        "AIP_HTTP_PORT": "9123",
        "AIP_HEALTH_ROUTE": "/v1/ready",
        "AIP_PREDICT_ROUTE": "/v1/models/shop:predict",
        "AIP_STORAGE_URI": str(registry),
    }
    settings = Settings.from_env(env, reload_interval_s=0)
    assert (settings.port, settings.storage_uri) == (9123, str(registry))
    with LiveServer(settings) as server:
        server.wait_ready("/v1/ready")
        status, body = server.predict({"instances": [{"user_id": "someone"}]}, path="/v1/models/shop:predict")
        assert status == 200 and body["predictions"][0]["model_version"] in ("v1-dien", "v0-din")
        assert server.request("GET", "/health")[0] == 404
