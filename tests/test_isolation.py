"""components.isolation: a call runs in a fresh process and hands back its result or its exception."""

import os

import pytest

from bench.stages import StageSkipped
from components.isolation import in_fresh_process


def _pid_and_sum(a: int, b: int = 0) -> tuple[int, int]:
    return os.getpid(), a + b


def _skip(reason: str) -> None:
    raise StageSkipped(reason)


def _rss_mib() -> int:
    """This process's resident memory in MiB (Linux /proc)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))


def _allocate_and_report(mib: int) -> int:
    """Holds `mib` MiB touched; returns this process's resident memory in MiB."""
    block = bytearray(mib << 20)
    block[::4096] = b"x" * len(block[::4096])
    return _rss_mib()


def test_the_call_runs_in_another_process_with_its_arguments():
    pid, total = in_fresh_process(_pid_and_sum, 2, b=3)
    assert total == 5 and pid != os.getpid()


def test_an_exception_comes_back_with_its_type_and_message():
    with pytest.raises(StageSkipped, match="no impressions"):
        in_fresh_process(_skip, "no impressions")


def test_the_childs_memory_is_not_left_in_this_process():
    before = _rss_mib()
    assert in_fresh_process(_allocate_and_report, 300) >= 300
    assert _rss_mib() < before + 100
