"""The tiny synthetic shop through the real stages (warehouse, extract, features, retrieval, DIEN and DIN), the
export's table, and the serving model built from the same artifacts: what parity and the server tests need."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

TOP_K, CANDIDATES_N = 10, 30
EXPERIMENT, RATIO = "ranker", 0.5


@dataclasses.dataclass(frozen=True)
class TinyShop:
    features: Path
    retrieval: Path
    dien: Path
    din: Path
    serving_model: Path  # treatment DIEN, control DIN (as the "last blessed model before")
    export_dir: Path  # the export's artifact for the same two arms


@pytest.fixture(scope="session")
def tiny_shop(tmp_path_factory) -> TinyShop:
    from components.export.export import ExportParams, run_export
    from components.extract.stage import run as run_extract
    from components.features.pipeline import run_features
    from components.ranking import stage as ranking_stage
    from components.retrieval import stage as retrieval_stage
    from components.serving.bundle import build_serving_model
    from components.warehouse.duckdb_warehouse import build_warehouse

    root = tmp_path_factory.mktemp("tiny_shop")
    build_warehouse("synthetic:tiny", root / "shop.duckdb", seed=0)
    run_extract(f"duckdb://{root / 'shop.duckdb'}", root / "extract", min_events_per_user=3)
    run_features(str(root / "extract"), str(root / "features"), seed=0)
    retrieval_stage.run(root / "features", root / "retrieval", epochs=1)
    ranking_stage.run(str(root / "features"), str(root / "dien"), "dien", 1, 0, retrieval_model=str(root / "retrieval"))
    ranking_stage.run(str(root / "features"), str(root / "din"), "din", 1, 0, retrieval_model=str(root / "retrieval"))
    control = {"version": "v0-din", "retrieval_dir": str(root / "retrieval"), "ranking_dir": str(root / "din")}
    build_serving_model(
        root / "features",
        root / "retrieval",
        root / "dien",
        root / "serving",
        model_version="v1-dien",
        top_k=TOP_K,
        candidates_n=CANDIDATES_N,
        experiment=EXPERIMENT,
        treatment_ratio=RATIO,
        control=control,
    )
    params = ExportParams(
        top_k=TOP_K,
        candidates_n=CANDIDATES_N,
        experiment=EXPERIMENT,
        treatment_ratio=RATIO,
        model_version="v1-dien",
        run_id="r1",
        generated_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )
    run_export(
        root / "features",
        root / "retrieval",
        root / "dien",
        f"duckdb://{root / 'recs.duckdb'}",
        root / "export",
        params,
        blessed_retrieval_dir=control["retrieval_dir"],
        blessed_ranking_dir=control["ranking_dir"],
        blessed_model_version=control["version"],
    )
    return TinyShop(
        root / "features", root / "retrieval", root / "dien", root / "din", root / "serving", root / "export"
    )


@pytest.fixture(scope="session")
def predictor(tiny_shop):
    """The tiny shop's serving model, loaded once for the session (parity, and the models the swap tests reuse)."""
    from components.serving.predictor import Predictor

    return Predictor.load(tiny_shop.serving_model)


@pytest.fixture(scope="session")
def reuse_models(predictor):
    """A Predictor loader for ModelHolder that reads the snapshot's serving folder (settings, users, catalogue) but
    takes both arms' TensorFlow models from the session's predictor instead of loading them again (seconds each),
    under the snapshot's versions. The real load path is the `live` server's."""
    from components.serving import bundle
    from components.serving.predictor import Predictor

    def load_model(retrieval_dir, ranking_dir, version):
        arm = Path(retrieval_dir).parent.name  # treatment/ or control/
        return dataclasses.replace(predictor._arms[arm].model, version=version)

    def load(snapshot):
        return Predictor(bundle.read_serving_model(snapshot), load_model=load_model)

    return load


def publish_version(tiny_shop, registry: Path, version: str, scratch: Path) -> None:
    """Publishes the tiny shop's serving model into `registry` under another version (its serving.json says so)."""
    import json
    import shutil

    from components.serving import bundle

    copy = scratch / version
    shutil.copytree(tiny_shop.serving_model, copy)
    config = json.loads((copy / bundle.CONFIG).read_text())
    (copy / bundle.CONFIG).write_text(json.dumps({**config, "model_version": version}))
    bundle.publish(copy, registry, version)


@pytest.fixture(scope="session")
def exported_lists(tiny_shop) -> dict[str, dict]:
    """user -> {"items", "scores", "source", "variant", "model_version"} from the export's Parquet."""
    table = pq.read_table(tiny_shop.export_dir / "recommendations.parquet").to_pylist()
    lists: dict[str, dict] = {}
    for row in sorted(table, key=lambda r: (r["user_id"], r["rank"])):
        entry = lists.setdefault(
            row["user_id"],
            {
                "items": [],
                "scores": [],
                "source": row["source"],
                "variant": row["variant"],
                "model_version": row["model_version"],
            },
        )
        entry["items"].append(row["item_id"])
        entry["scores"].append(row["score"])
    return lists


class LiveServer:
    """The real app under uvicorn on a loopback socket, in a thread of the test process."""

    def __init__(self, settings, holder=None):
        import uvicorn

        from components.serving.server import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.app = create_app(settings, holder)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()

    def wait_ready(self, path: str = "/health", timeout_s: float = 900.0) -> None:
        """Until health answers 200 (loading and warming both arms takes minutes on a loaded machine); a failed
        load fails at once with its error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, answer = self.request("GET", path)
            if status == 200:
                return
            if isinstance(answer, dict) and answer.get("error"):
                raise RuntimeError(f"{path}: the model did not load: {answer['error']}")
            time.sleep(0.1)
        raise TimeoutError(f"{path} not 200 after {timeout_s} s")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, parsed JSON or raw bytes) over a real HTTP connection."""
        import http.client
        import json

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body, headers or {"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw

    def predict(self, payload, path: str = "/predict"):
        import json

        return self.request("POST", path, json.dumps(payload).encode())
