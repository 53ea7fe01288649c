"""CPU, memory and accelerator per pipeline stage, as Vertex AI and Kubeflow read them from the spec.

Vertex AI picks each task's machine type from the limits; Kubeflow schedules pods by the requests.
`kfp.local` ignores both, so local runs are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.image import gpu_image


@dataclass(frozen=True)
class StageResources:
    cpu: str
    memory: str
    accelerator_allowed: bool = False


# Sized for a shop of a few million events a day. The features stage mostly launches Dataflow in production,
# but runs Beam's DirectRunner when no Dataflow options are given, so it keeps a full machine.
STAGE_RESOURCES: dict[str, StageResources] = {
    "extract": StageResources(cpu="2", memory="8G"),
    "features": StageResources(cpu="4", memory="16G"),
    "retrieval": StageResources(cpu="8", memory="32G", accelerator_allowed=True),
    "ranking": StageResources(cpu="8", memory="32G", accelerator_allowed=True),
    "evaluation": StageResources(cpu="4", memory="16G"),
    "export": StageResources(cpu="4", memory="16G"),
    "experiments": StageResources(cpu="2", memory="8G"),
    "serving": StageResources(cpu="2", memory="8G"),
    "register": StageResources(cpu="1", memory="2G"),
}


def apply_resources(task, stage: str, accelerator: str | None = None, accelerator_count: int = 1):
    """Sets requests = limits for `stage` on a kfp PipelineTask; a trainer with `accelerator`
    (e.g. "NVIDIA_TESLA_T4") also gets the GPU variant of the image. Returns the task."""
    if stage not in STAGE_RESOURCES:
        raise KeyError(f"no resources for stage {stage!r}; known stages: {sorted(STAGE_RESOURCES)}")
    resources = STAGE_RESOURCES[stage]
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    if accelerator:
        if not resources.accelerator_allowed:
            raise ValueError(f"stage {stage!r} does not use an accelerator; only {accelerator_stages()} do")
        if accelerator_count < 1:
            raise ValueError(f"accelerator_count must be >= 1, got {accelerator_count}")
        task.set_accelerator_type(accelerator).set_accelerator_limit(accelerator_count)
        task.set_container_image(gpu_image())
    return task


def accelerator_stages() -> list[str]:
    """The stages that may run on an accelerator, for the pipeline's accelerator parameters and their check."""
    return sorted(name for name, r in STAGE_RESOURCES.items() if r.accelerator_allowed)
