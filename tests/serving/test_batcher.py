"""The server's Batcher on its own event loop (no HTTP): requests queued together are one model call, under load a
call that is not full waits (bounded) for the requests arriving just after, and a request arriving alone never waits."""

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from components.serving.server import Batcher


class _Recorder:
    """A predictor double: one answer per instance (its value), and the size of every call."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls: list[list] = []
        self._lock = threading.Lock()

    def predict(self, instances):
        with self._lock:
            self.calls.append(list(instances))
        time.sleep(self.delay_s)
        return [{"items": [instance]} for instance in instances]


async def _with_batcher(batcher: Batcher, scenario):
    task = asyncio.create_task(batcher.run())
    try:
        return await scenario()
    finally:
        task.cancel()
        batcher.close()


def _later(batcher, predictor, instances, delay_s):
    async def request():
        await asyncio.sleep(delay_s)
        started = time.perf_counter()
        answer = await batcher.predict(predictor, instances)
        return answer, time.perf_counter() - started

    return request()


def test_requests_queued_together_are_one_call_each_getting_its_answers():
    batcher, predictor = Batcher(max_instances=256), _Recorder()

    async def scenario():
        return await asyncio.gather(*(batcher.predict(predictor, [f"u{i}", f"v{i}"]) for i in range(5)))

    answers = asyncio.run(_with_batcher(batcher, scenario))
    assert [[p["items"] for p in answer] for answer in answers] == [[[f"u{i}"], [f"v{i}"]] for i in range(5)]
    assert [len(call) for call in predictor.calls] == [10]


def test_under_load_a_call_gathers_the_requests_arriving_within_the_window():
    """The first call holds two requests (load); the next starts with one request and takes the two that arrive
    5 and 10 ms later into the same call, because the window (200 ms) is still open."""
    batcher, predictor = Batcher(max_instances=256, gather_s=0.2), _Recorder()

    async def scenario():
        await asyncio.gather(batcher.predict(predictor, ["a"]), batcher.predict(predictor, ["b"]))
        return await asyncio.gather(
            *(_later(batcher, predictor, [x], d) for x, d in (("c", 0), ("d", 0.005), ("e", 0.01)))
        )

    answers = asyncio.run(_with_batcher(batcher, scenario))
    assert [answer[0]["items"] for answer, _ in answers] == [["c"], ["d"], ["e"]]
    assert predictor.calls == [["a", "b"], ["c", "d", "e"]]


def test_without_a_window_the_late_requests_are_calls_of_their_own():
    batcher, predictor = Batcher(max_instances=256, gather_s=0.0), _Recorder()

    async def scenario():
        await asyncio.gather(batcher.predict(predictor, ["a"]), batcher.predict(predictor, ["b"]))
        await asyncio.gather(*(_later(batcher, predictor, [x], d) for x, d in (("c", 0), ("d", 0.05))))

    asyncio.run(_with_batcher(batcher, scenario))
    assert predictor.calls == [["a", "b"], ["c"], ["d"]]


def test_a_request_arriving_alone_is_scored_at_once():
    """After a call of one request (no load) the next lone request does not wait for the window (10 s here)."""
    batcher, predictor = Batcher(max_instances=256, gather_s=10.0), _Recorder()

    async def scenario():
        await batcher.predict(predictor, ["a"])
        return await _later(batcher, predictor, ["b"], 0)

    _, seconds = asyncio.run(_with_batcher(batcher, scenario))
    assert predictor.calls == [["a"], ["b"]] and seconds < 1.0


def test_gathering_stops_when_the_next_request_does_not_fit():
    """A full call is scored without waiting out the window, and the request that did not fit is the next call."""
    batcher, predictor = Batcher(max_instances=4, gather_s=2.0), _Recorder()

    async def scenario():
        await asyncio.gather(batcher.predict(predictor, ["a"]), batcher.predict(predictor, ["b"]))
        return await asyncio.gather(
            _later(batcher, predictor, ["c", "d"], 0),
            _later(batcher, predictor, ["e"], 0.005),
            _later(batcher, predictor, ["f", "g"], 0.01),
        )

    (_, first_s), _, _ = asyncio.run(_with_batcher(batcher, scenario))
    assert predictor.calls == [["a", "b"], ["c", "d", "e"], ["f", "g"]]
    assert first_s < 1.0  # answered when f and g did not fit, not at the end of the 2 s window


def test_requests_for_another_model_are_not_gathered_into_the_call():
    batcher, first, second = Batcher(max_instances=256, gather_s=2.0), _Recorder(), _Recorder()

    async def scenario():
        await asyncio.gather(batcher.predict(first, ["a"]), batcher.predict(first, ["b"]))
        return await asyncio.gather(_later(batcher, first, ["c"], 0), _later(batcher, second, ["x"], 0.005))

    (_, first_s), _ = asyncio.run(_with_batcher(batcher, scenario))
    assert first.calls == [["a", "b"], ["c"]] and second.calls == [["x"]] and first_s < 1.0


def test_threads_are_set_in_a_fresh_process():
    """configure_threads as the server's main calls it: TensorFlow's pools and NumPy's OpenBLAS at the requested
    sizes; 0 leaves each at its default. The product the funnel computes is the same on one thread up to float32
    rounding (OpenBLAS splits the sum by thread on some CPUs, so bit equality is not promised)."""
    code = """
import ctypes, glob, sys
import numpy as np
from components.serving.server import configure_threads
import tensorflow as tf
openblas = ctypes.CDLL(glob.glob(np.__path__[0] + "/../numpy.libs/libscipy_openblas64_*.so")[0])
rng = np.random.default_rng(0)
query, items = rng.normal(size=(8, 64)).astype(np.float32), rng.normal(size=(3000, 64)).astype(np.float32)
before, threads = query @ items.T, openblas.scipy_openblas_get_num_threads64_()
configure_threads(int(sys.argv[1]), int(sys.argv[1]))
tf.constant(1.0) + 1.0
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads(),
      "same" if openblas.scipy_openblas_get_num_threads64_() == threads else openblas.scipy_openblas_get_num_threads64_(),
      np.allclose(before, query @ items.T, rtol=1e-6, atol=1e-5))
"""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def run(n: int) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", code, str(n)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            env=env,
            cwd=root,
        )
        return done.stdout.split()

    assert run(1) == ["1", "1", "1", "True"]  # both pools of TensorFlow and NumPy's OpenBLAS on one thread
    assert run(0) == ["0", "0", "same", "True"]
