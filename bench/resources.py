"""What one bench stage costs besides its wall time: CPU seconds and peak resident memory, its worker processes
included (Beam's DirectRunner and kfp.local run stages in child processes, which the process's own figures miss).

CPU comes from getrusage (this process, plus the children it has waited for); peak memory from sampling the
resident set of this process and all its living descendants in /proc, since ru_maxrss only keeps the largest
single process and never resets between stages.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import threading
import time
from pathlib import Path

SAMPLE_EVERY_S = 0.1
_PROC = Path("/proc")


def _children(pid: int) -> list[int]:
    found = []
    for task in (_PROC / str(pid) / "task").glob("*/children"):
        try:
            found.extend(int(child) for child in task.read_text().split())
        except OSError:  # the task ended while being read
            continue
    return found


def tree_rss_mb(root: int | None = None) -> float:
    """Resident memory of `root` (default this process) and every living descendant, in MiB (Linux /proc)."""
    pending, total_kib = [root or os.getpid()], 0
    while pending:
        pid = pending.pop()
        try:
            status = (_PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        pending.extend(_children(pid))
    return total_kib / 1024


def cpu_seconds() -> float:
    """User + system time of this process and of the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclasses.dataclass
class Usage:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0


class StageMeter:
    """`with StageMeter() as usage:` fills `usage` with the block's wall and CPU seconds and its peak tree RSS."""

    def __init__(self, every_s: float = SAMPLE_EVERY_S):
        self.every_s = every_s
        self.usage = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="stage-meter")

    def _sample(self) -> None:
        while True:
            self.usage.peak_rss_mb = max(self.usage.peak_rss_mb, tree_rss_mb())
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> Usage:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        self._thread.start()
        return self.usage

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.usage.wall_s = time.perf_counter() - self._wall
        self.usage.cpu_s = cpu_seconds() - self._cpu
