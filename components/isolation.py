"""Runs a call in a fresh process, as the pipeline runs each stage in a container of its own.

A stage that trains TensorFlow or loads a catalogue keeps what it allocated (TensorFlow's allocator, NumPy's and
DuckDB's arenas) until its process ends: in one long process every later stage starts on top of every earlier
stage's high-water mark. A spawned child returns all of it to the system when it ends, so each stage's peak memory
is its own. Spawn, not fork: a forked child would inherit the parent's TensorFlow runtime and its threads.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def _configure_logging(level: int, fmt: str | None) -> None:
    """The child logs as its parent does: the stages' progress lines keep reaching stderr."""
    logging.basicConfig(level=level, format=fmt)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)


def in_fresh_process(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` in a spawned child; its result (and any exception it raises) comes back pickled,
    the child's traceback attached as the exception's cause. `function` must be importable (module level)."""
    root = logging.getLogger()
    fmt = root.handlers[0].formatter._fmt if root.handlers and root.handlers[0].formatter else None
    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_configure_logging,
        initargs=(root.level, fmt),
    ) as executor:
        return executor.submit(function, *args, **kwargs).result()
