"""Per-stage CPU, memory and accelerator settings land in the compiled spec where Vertex and KFP read them."""

import pytest
import yaml

from components.cloud.resources import STAGE_RESOURCES, accelerator_stages, apply_resources
from components.image import IMAGE, gpu_image

from .tiny_pipeline import compile_tiny


def executors(path):
    return yaml.safe_load(path.read_text())["deploymentSpec"]["executors"]


def test_requests_and_limits_per_stage_in_the_spec(tmp_path):
    spec = executors(compile_tiny(tmp_path / "p.yaml"))
    train = spec["exec-train"]["container"]
    assert train["image"] == IMAGE
    assert train["resources"]["cpuLimit"] == float(STAGE_RESOURCES["ranking"].cpu)
    assert train["resources"]["memoryLimit"] == 32.0
    assert train["resources"]["resourceCpuRequest"] == STAGE_RESOURCES["ranking"].cpu
    assert train["resources"]["resourceMemoryLimit"] == STAGE_RESOURCES["ranking"].memory
    assert "accelerator" not in train["resources"]
    assert spec["exec-publish"]["container"]["resources"]["resourceCpuLimit"] == STAGE_RESOURCES["export"].cpu


def test_accelerator_for_a_trainer_switches_to_the_gpu_image(tmp_path):
    train = executors(compile_tiny(tmp_path / "p.yaml", accelerator="NVIDIA_TESLA_T4"))["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "NVIDIA_TESLA_T4"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["image"] == gpu_image() == IMAGE + "-gpu"


def test_bad_stage_or_accelerator_is_refused():
    from kfp import dsl

    from .tiny_pipeline import publish, train

    with pytest.raises(KeyError, match="known stages"):

        @dsl.pipeline(name="bad-stage")
        def bad_stage():
            apply_resources(train(epochs=1), "trainer")

    with pytest.raises(ValueError, match="does not use an accelerator"):

        @dsl.pipeline(name="bad-accelerator")
        def bad_accelerator():
            apply_resources(publish(model=train(epochs=1).outputs["model"]), "export", accelerator="NVIDIA_TESLA_T4")

    assert accelerator_stages() == ["ranking", "retrieval"]
