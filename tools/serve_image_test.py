"""Starts the serving image as a Vertex AI endpoint would and sends real HTTP requests to it.

`make serve-image-test` builds the image (docker/Dockerfile.serving on the component image) with buildah, then runs
this. The container runs the image's own entry point (read from the image, not restated here) in a `buildah run
--isolation chroot` container, which shares this machine's network, with the serving model mounted read-only at
/models and Vertex AI's variables set: AIP_STORAGE_URI, AIP_HTTP_PORT (a free loopback port), AIP_HEALTH_ROUTE and
AIP_PREDICT_ROUTE (not the defaults, so the routes are shown to come from them). It waits for the health route,
checks one prediction's shape and a refusal, then sends `requests` requests from 1 and 8 clients (the serve-bench
code, components.serving.bench) and fails on any error.

    python -m tools.serve_image_test --image recsys-pipeline:TAG-serving --model runs/local/registry/serving
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tools.image_test import BUILDAH, local_image_name

MOUNT = "/models"
HEALTH_ROUTE, PREDICT_ROUTE = "/v1/health", "/v1/models/shop-recsys:predict"


def entrypoint(image: str) -> list[str]:
    """The image's ENTRYPOINT + CMD, as a container runtime (and Vertex AI) starts it. Read from `buildah inspect`'s
    whole JSON: Debian bookworm's buildah (1.28) has no `json` function for --format templates."""
    inspected = json.loads(
        subprocess.run(
            [*BUILDAH, "inspect", "--type", "image", image], check=True, capture_output=True, text=True
        ).stdout
    )
    config = (inspected.get("OCIv1") or {}).get("config") or {}
    command = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    if not command:
        raise ValueError(f"{image} has no entry point")
    return command


def container_env(port: int) -> dict[str, str]:
    """Vertex AI's custom-container variables for a model mounted at MOUNT."""
    return {
        "AIP_STORAGE_URI": MOUNT,
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": HEALTH_ROUTE,
        "AIP_PREDICT_ROUTE": PREDICT_ROUTE,
    }


def run_serve_image_test(image: str, model: str | Path, *, requests: int = 200, timeout_s: float = 1200.0) -> dict:
    """The serve-bench figures at concurrency 1 and 8 of the running image; AssertionError on a wrong answer."""
    from components import schema
    from components.serving import bench, bundle
    from components.serving.source import ModelSource

    model = Path(model).resolve()
    if not model.is_dir():
        raise FileNotFoundError(f"{model}: no serving model (run a blessed `make pipeline-run`, or set MODEL=)")
    source = ModelSource(str(model))
    try:
        serving = bundle.read_serving_model(source.fetch(source.current_version()))
    finally:
        source.close()
    with_history = (serving.inputs.hist_items != schema.PAD_INDEX).any(axis=1)
    users = [str(u) for u in serving.inputs.user_ids[with_history]]
    if not users:
        raise ValueError(f"{model}: no user with a stored history to send")
    image = local_image_name(image)
    command = entrypoint(image)
    port = bench.free_port()
    container = subprocess.run(
        [*BUILDAH, "from", "--quiet", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    env = [arg for key, value in container_env(port).items() for arg in ("--env", f"{key}={value}")]
    process = subprocess.Popen(
        [*BUILDAH, "run", "--isolation", "chroot", "-v", f"{model}:{MOUNT}:ro", *env, container, "--", *command]
    )
    try:
        bench.wait_healthy("127.0.0.1", port, HEALTH_ROUTE, process, timeout_s=timeout_s)
        status, answer = _post(port, {"instances": [{"user_id": users[0]}, {"user_id": "not-a-known-user"}]})
        assert status == 200, (status, answer)
        known, unknown = answer["predictions"]
        assert known["model_version"] in (serving.config.model_version, serving.config.control_version), known
        assert len(known["items"]) == len(known["scores"]) == serving.config.top_k, known
        assert unknown["source"] == "popularity_fallback", unknown
        status, answer = _post(port, {"instances": [{"user_id": users[0], "k": 0}]})
        assert status == 400 and answer["error"].startswith("instances[0].k:"), (status, answer)
        figures = {}
        for level in (1, 8):
            bodies = bench.user_requests(users, requests, seed=level)
            figures[f"c{level}"] = bench.run_level("127.0.0.1", port, PREDICT_ROUTE, bodies, level)
            assert figures[f"c{level}"]["errors"] == 0, figures
        return {"image": image, "entrypoint": command, "model_version": serving.config.model_version, **figures}
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        subprocess.run([*BUILDAH, "rm", container], check=False, capture_output=True)


def _post(port: int, payload: dict) -> tuple[int, dict]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", PREDICT_ROUTE, json.dumps(payload), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="the serving image, e.g. recsys-pipeline:TAG-serving")
    parser.add_argument("--model", required=True, help="serving model folder or a registry's serving/ folder")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    args = parser.parse_args(argv)
    print(json.dumps(run_serve_image_test(args.image, args.model, requests=args.requests), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
