"""make serve-bench: the prediction server on loopback, timed with real HTTP requests from 1, 8 and 32 clients.

    python -m components.serving.bench --model <serving model or registry> --out <bench.json> [--requests 2000]
    python -m components.serving.bench --url http://127.0.0.1:8080 --model ... --requests 200   # a running server

Starts `python -m components.serving.server` in a subprocess (client and server must not share a GIL), waits for
its health route, and sends `requests` requests per concurrency, each for one user with a stored history (drawn
with a fixed seed), one user per request. Writes serving.c<n>.{p50_ms, p95_ms, p99_ms, rps, errors} into the
bench JSON (beside its other keys), and beside them serving.batch.users_per_s: the export's scoring
(components.export.batch.score_users) over every user of the same model, for comparison.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from components import atomic, schema

CONCURRENCIES = (1, 8, 32)
WARMUP_REQUESTS = 20
HEALTH_TIMEOUT_S = 1200.0  # loading and warming both arms; minutes on a loaded machine


def user_requests(users: np.ndarray, count: int, seed: int = 0) -> list[bytes]:
    """`count` request bodies, one user each, drawn with replacement."""
    rng = np.random.default_rng(seed)
    return [json.dumps({"instances": [{"user_id": str(u)}]}).encode() for u in rng.choice(users, size=count)]


def run_level(host: str, port: int, path: str, bodies: list[bytes], concurrency: int) -> dict:
    """Sends every body from `concurrency` clients (one keep-alive connection each) and times each request."""
    latencies = np.zeros(len(bodies))
    errors = np.zeros(len(bodies), dtype=bool)
    cursor, lock = iter(range(len(bodies))), threading.Lock()

    def client():
        connection = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            started = time.perf_counter()
            try:
                connection.request("POST", path, bodies[i], {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                errors[i] = response.status != 200 or b'"predictions"' not in answer
            except (OSError, http.client.HTTPException):
                errors[i] = True
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
            latencies[i] = time.perf_counter() - started
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = latencies * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "rps": round(len(bodies) / wall, 1),
        "errors": int(errors.sum()),
        "requests": len(bodies),
    }


def wait_healthy(
    host: str, port: int, path: str, process: subprocess.Popen | None = None, timeout_s: float = HEALTH_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was healthy")
        try:
            connection = http.client.HTTPConnection(host, port, timeout=5)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"http://{host}:{port}{path} was not healthy after {timeout_s:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def batch_users_per_s(snapshot: Path) -> dict:
    """The export's scoring of every user with the treatment model: users per second of the batch path."""
    from components.export import batch
    from components.serving import bundle
    from components.serving.models import load_serving_model

    serving = bundle.read_serving_model(snapshot)
    model = load_serving_model(*serving.model_dirs(bundle.TREATMENT), serving.config.model_version)
    rows = np.arange(len(serving.inputs.user_ids))
    started = time.perf_counter()
    batch.score_users(model, serving.inputs, rows, candidates_n=serving.config.candidates_n, top_k=serving.config.top_k)
    seconds = time.perf_counter() - started
    return {"users_per_s": round(len(rows) / seconds, 1), "users": len(rows), "score_s": round(seconds, 3)}


def serve_bench(
    model_uri: str, *, requests: int = 2000, concurrencies=CONCURRENCIES, url: str | None = None, seed: int = 0
) -> dict:
    """{"serving": {...}}: the figures of one run; starts (and stops) a server unless `url` names a running one."""
    from components.serving import bundle, server
    from components.serving.source import ModelSource

    source = ModelSource(model_uri)
    try:
        snapshot = source.fetch(source.current_version())
        serving = bundle.read_serving_model(snapshot)
        with_history = (serving.inputs.hist_items != schema.PAD_INDEX).any(axis=1)
        users = serving.inputs.user_ids[with_history]
        if not len(users):
            raise ValueError(f"{model_uri}: no user with a stored history to send")
        process = None
        if url:
            parsed = urllib.parse.urlsplit(url)
            host, port = parsed.hostname, parsed.port or 80
        else:
            host, port = "127.0.0.1", free_port()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "components.serving.server",
                    "--model",
                    model_uri,
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--reload-interval",
                    "0",
                    "--log-level",
                    "warning",
                ]
            )
        try:
            wait_healthy(host, port, server.HEALTH_ROUTE, process)
            load_before = os.getloadavg()
            figures = {}
            for level in concurrencies:
                run_level(host, port, server.PREDICT_ROUTE, user_requests(users, WARMUP_REQUESTS, seed + 1), level)
                figures[f"c{level}"] = run_level(
                    host, port, server.PREDICT_ROUTE, user_requests(users, requests, seed), level
                )
            load_after = os.getloadavg()
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
        figures["batch"] = batch_users_per_s(snapshot)
    finally:
        source.close()
    figures.update(
        {
            "model_version": serving.config.model_version,
            "candidates_n": serving.config.candidates_n,
            "top_k": serving.config.top_k,
            "users_with_history": int(len(users)),
            "load_avg_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
            "cpus": os.cpu_count(),
        }
    )
    return {"serving": figures}


def write_into(out: str | Path, keys: dict) -> None:
    """Adds the keys to the bench JSON at `out` (created if missing), replacing those of an earlier run."""
    path = Path(out)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="serving model folder or registry (as AIP_STORAGE_URI)")
    parser.add_argument("--out", help="bench JSON to write the serving keys into")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    parser.add_argument("--url", help="bench a running server (e.g. the serving image) instead of starting one")
    args = parser.parse_args(argv)
    keys = serve_bench(args.model, requests=args.requests, concurrencies=tuple(args.concurrency), url=args.url)
    print(json.dumps(keys, indent=2))
    if args.out:
        write_into(args.out, keys)
    errors = sum(keys["serving"][f"c{level}"]["errors"] for level in args.concurrency)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
