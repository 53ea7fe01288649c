"""The trainers' Vertex AI machine: the compiled spec's trainer tasks carry its limits, GPUs, the GPU image and the
distribution strategy, and the custom jobs Vertex runs them as (built with the SDK, never sent) name its machine
type, accelerator and replica count."""

import os
import subprocess
import sys

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform_v1.types import accelerator_type as accelerator_types

from components import distribution
from components.cloud import resources
from components.image import gpu_image
from pipelines.submit import TRAINER_EXECUTORS, describe_custom_job, submit_vertex, trainer_custom_jobs

VERTEX = dict(
    project="shop-prod", region="europe-west1", bucket="shop-prod-pipelines", credentials=AnonymousCredentials()
)


@pytest.fixture(scope="module")
def a100_spec(tmp_path_factory):
    """The real DAG compiled as `make compile` does, for two A100s (the machine is read when the DAG is built)."""
    path = tmp_path_factory.mktemp("a100") / "pipeline.yaml"
    env = {**os.environ, resources.TRAINING_MACHINE_ENV: "a100x2"}
    subprocess.run([sys.executable, "-m", "pipelines.compile", "--output", str(path)], env=env, check=True)
    return path


def executors(path):
    return yaml.safe_load(path.read_text())["deploymentSpec"]["executors"]


def test_compiled_trainers_ask_for_two_a100s_and_mirror(a100_spec):
    found = executors(a100_spec)
    for name in TRAINER_EXECUTORS:
        container = found[name]["container"]
        accelerator = container["resources"]["accelerator"]
        assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("NVIDIA_TESLA_A100", "2")
        assert container["resources"]["resourceCpuLimit"] == "24"
        assert container["resources"]["resourceMemoryLimit"] == "170G"
        assert container["image"] == gpu_image()
        assert {"name": distribution.ENV, "value": "mirrored"} in container["env"]
    for name in ("exec-evaluation", "exec-export", "exec-features"):
        assert "accelerator" not in found[name]["container"]["resources"]
        assert "env" not in found[name]["container"]


def test_custom_jobs_of_the_trainers_name_machine_gpus_and_replicas(a100_spec):
    jobs = trainer_custom_jobs(a100_spec, machine=resources.training_machine("a100x2"), **VERTEX)
    assert sorted(jobs) == sorted(TRAINER_EXECUTORS)
    container = executors(a100_spec)["exec-retrieval"]["container"]
    (pool,) = jobs["exec-retrieval"].job_spec.worker_pool_specs
    assert pool.machine_spec.machine_type == "a2-highgpu-2g"
    assert pool.machine_spec.accelerator_type == accelerator_types.AcceleratorType.NVIDIA_TESLA_A100
    assert pool.machine_spec.accelerator_count == 2
    assert pool.replica_count == 1
    assert pool.container_spec.image_uri == gpu_image()
    assert list(pool.container_spec.command) == container["command"]
    assert list(pool.container_spec.args) == container["args"]
    assert [(e.name, e.value) for e in pool.container_spec.env] == [(distribution.ENV, "mirrored")]
    assert jobs["exec-retrieval"].job_spec.base_output_directory.output_uri_prefix.startswith(
        "gs://shop-prod-pipelines/pipeline-root"
    )


def test_the_default_spec_trains_on_cpu_with_the_default_strategy(spec_path):
    container = executors(spec_path)["exec-ranking"]["container"]
    assert "accelerator" not in container["resources"] and "env" not in container
    (pool,) = trainer_custom_jobs(spec_path, **VERTEX)["exec-ranking"].job_spec.worker_pool_specs
    assert pool.machine_spec.machine_type == "n1-highmem-8"
    assert pool.machine_spec.accelerator_count == 0 and pool.replica_count == 1
    assert resources.training_machine().distribution == "default"


def test_a_spec_compiled_for_another_machine_is_refused(spec_path):
    with pytest.raises(ValueError, match="compiled for accelerator 'none'"):
        trainer_custom_jobs(spec_path, machine=resources.training_machine("t4x4"), **VERTEX)


def test_unknown_machine_and_non_trainer_stage_are_refused():
    with pytest.raises(ValueError, match="training machine 'v100'"):
        resources.training_machine("v100")
    with pytest.raises(ValueError, match="no trainer"):
        resources.apply_training_machine(object(), "export", resources.training_machine("t4"))
    assert [m.distribution for m in map(resources.training_machine, ("cpu", "t4", "t4x4"))] == [
        "default",
        "default",
        "mirrored",
    ]


def test_a_vertex_submission_shows_the_trainers_machines_first(a100_spec, capsys, monkeypatch):
    monkeypatch.setenv(resources.TRAINING_MACHINE_ENV, "a100x2")
    submit_vertex(a100_spec, **VERTEX, parameter_values={"warehouse_uri": "bigquery://shop-prod.w"}, submit=False)
    shown = capsys.readouterr().out
    assert "vertex: retrieval runs as a2-highgpu-2g + 2 x NVIDIA_TESLA_A100, 1 replica(s)" in shown
    assert shown.count("a2-highgpu-2g") == len(TRAINER_EXECUTORS)
    monkeypatch.delenv(resources.TRAINING_MACHINE_ENV)
    with pytest.raises(ValueError, match="compile with RECSYS_TRAINING_MACHINE"):
        submit_vertex(a100_spec, **VERTEX, submit=False)  # the spec's GPUs are not the machine the run names
    job = trainer_custom_jobs(a100_spec, machine=resources.training_machine("a100x2"), **VERTEX)["exec-ranking"]
    assert describe_custom_job(job) == "a2-highgpu-2g + 2 x NVIDIA_TESLA_A100, 1 replica(s)"
