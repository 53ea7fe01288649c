"""The run's own time: one instant per pipeline run, the same for each of its stages and for every retry of it.

It is the `run_time` pipeline parameter, which pipelines.run sets when it starts a local run or submits a one-off
remote one (a retry of a run keeps its parameters). A schedule's runs have no such value (one fixed value would
freeze every run of the schedule), so the DAG also hands each time-dependent stage the pipeline job's creation time
(KFP's `dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER`, which Vertex AI and a KFP host resolve, the same for every
retry of the job) and `of_run` picks: run_time, else the job's creation time. kfp.local (2.17) resolves no such
placeholder, so pipelines.run.local_job_time resolves it to the local run's run_time.
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


def of_run(run_time: str = "", job_create_time: str = "") -> str:
    """The run's time as a run_time value: `run_time` if set, else the pipeline job's creation time, else ""
    (now, for a caller outside a pipeline, or a backend that left the placeholder unresolved)."""
    if run_time:
        return parse(run_time).isoformat()
    if job_create_time and not job_create_time.startswith("{{$"):
        return parse(job_create_time, "the pipeline job's creation time").isoformat()
    return ""


def resolve(run_time: str = "") -> dt.datetime:
    """`run_time` if given, else now (UTC)."""
    return parse(run_time) if run_time else dt.datetime.now(dt.timezone.utc)


def now_iso() -> str:
    """The current time as a run_time value."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
