"""The run's own time: one instant per pipeline run, the same for each of its stages and for every retry of it.

It is the `run_time` pipeline parameter, which pipelines.run sets when it starts a local run or submits a one-off
remote one (a retry of a run keeps its parameters). The job's creation time placeholder would also serve scheduled
runs, but kfp.local cannot resolve it (kfp 2.17 fails on it), so the DAG does not use it: a run without run_time
(a schedule's) takes the time its stage runs.
"""

from __future__ import annotations

import datetime as dt


def parse(value: str, name: str = "run_time") -> dt.datetime:
    """An ISO-8601 / RFC 3339 time in UTC (naive means UTC), microsecond precision like the tables."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"{name} {value!r} is not an ISO-8601 time") from err
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def resolve(run_time: str = "") -> dt.datetime:
    """`run_time` if given, else now (UTC)."""
    return parse(run_time) if run_time else dt.datetime.now(dt.timezone.utc)


def now_iso() -> str:
    """The current time as a run_time value."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
