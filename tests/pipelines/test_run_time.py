"""The run's time on kfp.local (issue 15 case 7): the DAG's job-creation-time placeholder, which kfp.local 2.17
cannot resolve, resolves to the local run's run_time inside pipelines.run.local_job_time."""

import pytest
from kfp import dsl, local

from pipelines.run import local_job_time


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def run_time_of(run_time: str, job_create_time: str) -> str:
    from components.run_time import of_run

    return of_run(run_time, job_create_time)


@dsl.pipeline(name="run-time-probe")
def probe(run_time: str = "") -> str:
    return run_time_of(run_time=run_time, job_create_time=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER).output


def test_case07_local_run_resolves_the_job_creation_time_to_its_run_time(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    with pytest.raises(IndexError):  # kfp.local on its own fails on the placeholder (kfp 2.17)
        probe()
    with local_job_time("2026-11-25T23:59:00+00:00"):
        assert probe().output == "2026-11-25T23:59:00+00:00"  # a schedule-like run: no run_time, the job's time
        assert probe(run_time="2026-11-24T01:00:00Z").output == "2026-11-24T01:00:00+00:00"  # run_time wins
    with pytest.raises(IndexError):  # restored afterwards
        probe()
