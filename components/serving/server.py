"""The prediction server: the serving model behind HTTP, on Vertex AI's custom-container contract.

    python -m components.serving.server [--model URI] [--host H] [--port P] [--log-level debug]

The contract, so that the same image runs on a Vertex AI endpoint unchanged: the port from AIP_HTTP_PORT (8080),
the routes from AIP_HEALTH_ROUTE (/health) and AIP_PREDICT_ROUTE (/predict), the model from AIP_STORAGE_URI;
POST {"instances": [...]} answers {"predictions": [...]}. Health answers 503 until a model is loaded and warmed.

Requests are scored on one worker thread; the instances of requests that arrive while it is busy are scored
together in one funnel call, which spreads the models' per-call cost under load. Under load (the last call held
more than one request) a call that is not full first waits up to gather_ms for more requests: the clients the last
call answered send their next ones within a millisecond or so. A server taking one request at a time never waits.
NumPy's BLAS (OpenBLAS) and TensorFlow's pools run on one thread each in the server (`--blas-threads`,
`--tf-threads`): a request's work is far too small to share, so a second thread only adds hand-offs, and on a busy
2-core machine the query-times-catalogue product of 8 users took 10-25 ms on two OpenBLAS threads and 0.2 ms on one
(the same result, bit for bit; TensorFlow's scores are too). Throughput comes from batching requests instead.
A new model (a new LATEST in a local registry) is loaded and warmed beside serving and swapped in whole: each
request keeps the model it was checked against to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, Response

from components.serving.instances import RequestError, parse_body
from components.serving.predictor import Predictor
from components.serving.source import ModelSource

logger = logging.getLogger("components.serving")
HTTP_PORT, HEALTH_ROUTE, PREDICT_ROUTE = 8080, "/health", "/predict"  # Vertex AI's defaults, and the registered ones
LOAD_RETRY_S = 10.0


@dataclasses.dataclass(frozen=True)
class Settings:
    storage_uri: str
    host: str = "0.0.0.0"
    port: int = HTTP_PORT
    health_route: str = HEALTH_ROUTE
    predict_route: str = PREDICT_ROUTE
    max_body_bytes: int = 1_500_000  # Vertex AI's own limit on an online prediction request
    max_instances: int = 64  # per request
    max_batch_instances: int = 256  # per funnel call, over the requests scored together
    gather_ms: float = 2.0  # under load, how long a call that is not full waits for more requests (0: never)
    tf_threads: int = 1  # TensorFlow's intra- and inter-op threads (0: its default, one per core); set by main()
    blas_threads: int = 1  # NumPy's OpenBLAS threads (0: leave them as they are); set by main()
    reload_interval_s: float = 60.0  # how often the source is checked for a new version; 0: never
    summary_interval_s: float = 60.0

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> Settings:
        """Vertex AI's variables, then `overrides` (command-line values) where they are given."""
        values = {
            "storage_uri": env.get("AIP_STORAGE_URI", ""),
            "port": int(env.get("AIP_HTTP_PORT", cls.port)),
            "health_route": env.get("AIP_HEALTH_ROUTE", cls.health_route),
            "predict_route": env.get("AIP_PREDICT_ROUTE", cls.predict_route),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ModelHolder:
    """The current Predictor. A new one is built whole, then replaces the old by one reference assignment."""

    def __init__(self, source: ModelSource, load: Callable[[Path], Predictor] = Predictor.load):
        self.source = source
        self._load = load
        self._current: tuple[Predictor, Path] | None = None
        self._lock = threading.Lock()
        self.error: str | None = None

    @property
    def current(self) -> Predictor | None:
        current = self._current
        return current[0] if current else None

    def refresh(self) -> bool:
        """Loads and warms the source's current version unless it is already served; True when swapped in."""
        with self._lock:
            version = self.source.current_version()
            if self._current and self._current[0].version == version:
                return False
            started = time.perf_counter()
            snapshot = self.source.fetch(version)
            try:
                predictor = self._load(snapshot)
                predictor.warm()
            except BaseException:
                shutil.rmtree(snapshot, ignore_errors=True)
                raise
            old, self._current = self._current, (predictor, snapshot)
            self.error = None
            if old:
                shutil.rmtree(old[1], ignore_errors=True)  # its models are in memory; requests holding it finish
            logger.info(
                "serving model %s (%s%s), loaded and warmed in %.1f s",
                version,
                self.source.uri,
                f", replacing {old[0].version}" if old else "",
                time.perf_counter() - started,
            )
            return True

    def watch(self, interval_s: float, stop: threading.Event) -> None:
        """Loads the model, then checks for a new version every interval_s (never if 0); a failed load keeps the
        model being served and is retried."""
        while not stop.is_set():
            try:
                self.refresh()
            except Exception as err:  # noqa: BLE001 (a bad new model must not take the server down)
                self.error = f"{type(err).__name__}: {err}"
                logger.error(
                    "model load from %s failed, %s: %s",
                    self.source.uri,
                    "still serving " + self.current.version if self.current else "nothing served",
                    self.error,
                )
            if self.current is not None and interval_s <= 0:
                return
            stop.wait(interval_s if self.current is not None and interval_s > 0 else LOAD_RETRY_S)

    def close(self) -> None:
        self.source.close()


class Batcher:
    """Scores queued requests on one worker thread, the requests waiting for the same model together.

    gather_s: when the last call held more than one request (the server is under load), a call that is not full
    waits up to this long for more requests before it is scored; 0 never waits. One call for many users costs
    much less than one call each (the models' per-call cost is most of a small call), so waiting a millisecond
    or two raises throughput; a request that arrives alone is scored at once.
    """

    def __init__(self, max_instances: int, gather_s: float = 0.0):
        self.max_instances = max_instances
        self.gather_s = gather_s
        self._queue: collections.deque = collections.deque()
        self._wakeup = asyncio.Event()
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._under_load = False  # the last call held more than one request
        self.batches = 0

    async def predict(self, predictor: Predictor, instances: list) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((predictor, instances, future))
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                predictor, jobs, total = self._take()
                if self._under_load and self.gather_s > 0:
                    await self._gather(predictor, jobs, total)
                self._under_load = len(jobs) > 1
                self.batches += 1
                try:
                    results = await loop.run_in_executor(self._worker, _predict_together, predictor, jobs)
                except Exception as err:  # noqa: BLE001 (answered as a 500 to each request of the batch)
                    results = [err] * len(jobs)
                for (_, future), result in zip(jobs, results):
                    if future.done():  # the client went away
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

    def _take(self):
        """The oldest request and those queued behind it for the same model, up to max_instances in all."""
        predictor, instances, future = self._queue.popleft()
        jobs = [(instances, future)]
        total, _ = self._take_more(predictor, jobs, len(instances))
        return predictor, jobs, total

    def _take_more(self, predictor, jobs: list, total: int) -> tuple[int, bool]:
        """Moves queued requests for `predictor` into `jobs` while they fit; also True when the queue's next
        request cannot join (another model, or too many instances)."""
        while self._queue:
            queued_predictor, instances, future = self._queue[0]
            if queued_predictor is not predictor or total + len(instances) > self.max_instances:
                return total, True
            self._queue.popleft()
            jobs.append((instances, future))
            total += len(instances)
        return total, False

    async def _gather(self, predictor, jobs: list, total: int) -> None:
        """Adds requests arriving within gather_s to `jobs`, until the call is full or the next cannot join."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_s
        while total < self.max_instances:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            total, blocked = self._take_more(predictor, jobs, total)
            if blocked:
                return

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def _predict_together(predictor: Predictor, jobs) -> list[list[dict]]:
    predictions = predictor.predict([instance for instances, _ in jobs for instance in instances])
    out, start = [], 0
    for instances, _ in jobs:
        out.append(predictions[start : start + len(instances)])
        start += len(instances)
    return out


class _Stats:
    """Requests since the last summary line."""

    def __init__(self):
        self.started = time.monotonic()
        self.latencies_ms: list[float] = []
        self.instances = 0
        self.statuses: collections.Counter = collections.Counter()

    def record(self, status: int, latency_ms: float, instances: int) -> None:
        self.latencies_ms.append(latency_ms)
        self.instances += instances
        self.statuses[status // 100] += 1

    def line(self, model_version: str | None) -> str:
        seconds = time.monotonic() - self.started
        n = len(self.latencies_ms)
        latency = (
            f"; latency p50 {np.percentile(self.latencies_ms, 50):.1f} ms, "
            f"p99 {np.percentile(self.latencies_ms, 99):.1f} ms"
            if n
            else ""
        )
        return (
            f"last {seconds:.0f} s: {n} requests ({n / max(seconds, 1e-9):.1f}/s), {self.instances} instances, "
            f"{self.statuses[4]} refused (4xx), {self.statuses[5]} failed (5xx){latency}; "
            f"model {model_version or 'not loaded'}"
        )


def create_app(settings: Settings, holder: ModelHolder | None = None):
    """The FastAPI app; it starts loading the model (and polling for new versions) when it starts."""
    holder = holder or ModelHolder(ModelSource(settings.storage_uri))
    state = {"stats": _Stats()}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        stop = threading.Event()
        batcher = Batcher(settings.max_batch_instances, settings.gather_ms / 1e3)
        app.state.batcher = batcher
        loader = threading.Thread(
            target=holder.watch, args=(settings.reload_interval_s, stop), daemon=True, name="model-loader"
        )
        loader.start()
        tasks = [asyncio.create_task(batcher.run()), asyncio.create_task(summaries())]
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            batcher.close()
            loader.join(timeout=30)
            holder.close()

    async def summaries():
        while True:
            await asyncio.sleep(settings.summary_interval_s)
            logger.info(state["stats"].line(holder.current.version if holder.current else None))
            state["stats"] = _Stats()

    app = FastAPI(
        title="shop-recsys prediction server", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.holder = holder

    def json_response(status: int, payload: dict) -> Response:
        return Response(json.dumps(payload, allow_nan=False), status_code=status, media_type="application/json")

    @app.get(settings.health_route)
    async def health():
        predictor = holder.current
        if predictor is None:
            return json_response(503, {"status": "loading", "error": holder.error})
        return json_response(200, {"status": "ready", "model_version": predictor.version})

    @app.post(settings.predict_route)
    async def predict(request: Request):
        started, instances = time.perf_counter(), []
        predictor = holder.current
        try:
            if predictor is None:
                raise RequestError(f"model: not loaded yet; {settings.health_route} answers 200 when it is", 503)
            body = await _read_body(request, settings.max_body_bytes)
            instances = parse_body(body, max_instances=settings.max_instances, max_k=predictor.config.candidates_n)
            predictions = await app.state.batcher.predict(predictor, instances)
            status, payload = 200, {"predictions": predictions}
        except RequestError as err:
            status, payload = err.status, {"error": str(err)}
        except Exception as err:  # the server never dies on a request; logged with its traceback
            logger.exception("prediction failed")
            status, payload = 500, {"error": f"internal error: {type(err).__name__}: {err}"}
        latency_ms = (time.perf_counter() - started) * 1e3
        state["stats"].record(status, latency_ms, len(instances))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "POST %s %d, %d instances, %.1f ms%s",
                settings.predict_route,
                status,
                len(instances),
                latency_ms,
                f": {payload['error']}" if status != 200 else "",
            )
        return json_response(status, payload)

    return app


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"body: {int(declared):,} bytes, more than the limit of {limit:,}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body: more than the limit of {limit:,} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def configure_threads(tf_threads: int, blas_threads: int) -> list[str]:
    """TensorFlow's thread pools (before it runs anything: the server process's entry) and NumPy's OpenBLAS
    threads; 0 leaves either as it is. Returns what was set, for the log."""
    done = []
    if tf_threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
        done.append(f"TensorFlow {tf_threads} thread(s) per pool")
    if blas_threads > 0:
        done += [f"{name} {blas_threads} thread(s)" for name in set_blas_threads(blas_threads)]
    return done


# OpenBLAS's setter under its builds' names: NumPy's wheels (scipy-openblas, 64-bit ints), then plain builds.
_OPENBLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def set_blas_threads(threads: int) -> list[str]:
    """Sets the thread count of every OpenBLAS loaded in this process (what threadpoolctl does, without the
    package): NumPy reads no variable once it is imported. Returns the libraries it set; none off Linux."""
    import ctypes

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    libraries = sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.rsplit("/", 1)[-1]})
    done = []
    for library in libraries:
        handle = ctypes.CDLL(library)
        setter = next((getattr(handle, name) for name in _OPENBLAS_SETTERS if hasattr(handle, name)), None)
        if setter is not None:
            setter.argtypes = [ctypes.c_int]
            setter(threads)
            done.append(Path(library).name)
    return done


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", dest="storage_uri", help="serving model folder or registry (AIP_STORAGE_URI)")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (AIP_HTTP_PORT, default 8080)")
    parser.add_argument(
        "--reload-interval",
        dest="reload_interval_s",
        type=float,
        help="seconds between checks for a new model version (default 60; 0: never)",
    )
    parser.add_argument("--max-instances", dest="max_instances", type=int, help="instances per request (default 64)")
    parser.add_argument(
        "--gather-ms",
        dest="gather_ms",
        type=float,
        help="under load, how long a model call that is not full waits for more requests (default 2; 0: never)",
    )
    parser.add_argument(
        "--tf-threads",
        dest="tf_threads",
        type=int,
        help="TensorFlow's intra- and inter-op threads (default 1; 0: TensorFlow's default, one per core)",
    )
    parser.add_argument(
        "--blas-threads",
        dest="blas_threads",
        type=int,
        help="NumPy's OpenBLAS threads (default 1; 0: leave them as they are)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error"),
        help="debug logs one line per request",
    )
    args = vars(parser.parse_args(argv))
    level = args.pop("log_level")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(**args)
    if not settings.storage_uri:
        parser.error("no model: set AIP_STORAGE_URI or --model")
    threads = configure_threads(settings.tf_threads, settings.blas_threads)
    logger.info(
        "listening on %s:%d, health %s, predict %s, model %s; threads: %s",
        settings.host,
        settings.port,
        settings.health_route,
        settings.predict_route,
        settings.storage_uri,
        ", ".join(threads) or "libraries' defaults",
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False, log_level=level
    )


if __name__ == "__main__":
    main()
