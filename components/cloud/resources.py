"""CPU, memory and accelerator per pipeline stage, as Vertex AI and Kubeflow read them from the spec.

Vertex AI runs each task as a custom job on a machine that fits the limits and accelerator; Kubeflow schedules pods
by the requests. `kfp.local` ignores both, so local runs are unaffected. The trainers' machine is one of
TRAINING_MACHINES, chosen when the DAG is compiled (RECSYS_TRAINING_MACHINE, like RECSYS_IMAGE): a machine with more
than one GPU also sets RECSYS_DISTRIBUTION=mirrored, which trains under MirroredStrategy (components/distribution.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from components import distribution
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


@dataclass(frozen=True)
class TrainingMachine:
    """A Vertex AI machine for the two trainers: the limits that make Vertex pick `machine_type`, its GPUs, and the
    replicas of its worker pool (one: a pipeline task is one worker; see README's scale section for more)."""

    machine_type: str
    cpu: str
    memory: str
    accelerator_type: str = ""  # "" = CPU only
    accelerator_count: int = 0
    replica_count: int = 1

    @property
    def distribution(self) -> str:
        """MirroredStrategy across the GPUs of a multi-GPU machine; the default strategy otherwise."""
        return "mirrored" if self.accelerator_count > 1 else "default"


TRAINING_MACHINE_ENV = "RECSYS_TRAINING_MACHINE"
TRAINING_MACHINES: dict[str, TrainingMachine] = {
    # today's trainer resources (8 CPU, 32G): the smallest N1 machine that holds them
    "cpu": TrainingMachine("n1-highmem-8", cpu="8", memory="32G"),
    "t4": TrainingMachine(
        "n1-highmem-8", cpu="8", memory="32G", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1
    ),
    "t4x4": TrainingMachine(
        "n1-standard-32", cpu="32", memory="120G", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=4
    ),
    "a100x2": TrainingMachine(
        "a2-highgpu-2g", cpu="24", memory="170G", accelerator_type="NVIDIA_TESLA_A100", accelerator_count=2
    ),
}


def training_machine(name: str | None = None) -> TrainingMachine:
    """The named machine (default: RECSYS_TRAINING_MACHINE, else "cpu"); an unknown name is refused with the choices."""
    name = name or os.environ.get(TRAINING_MACHINE_ENV, "") or "cpu"
    if name not in TRAINING_MACHINES:
        raise ValueError(f"training machine {name!r}: expected one of {sorted(TRAINING_MACHINES)}")
    return TRAINING_MACHINES[name]


def apply_training_machine(task, stage: str, machine: TrainingMachine):
    """apply_resources for a trainer task on `machine`: its limits and GPUs (with the GPU image), and the strategy
    the trainer builds its model under. Returns the task."""
    if stage not in accelerator_stages():
        raise ValueError(f"stage {stage!r} is no trainer; only {accelerator_stages()} take a training machine")
    apply_resources(task, stage, machine.accelerator_type or None, max(machine.accelerator_count, 1))
    task.set_cpu_request(machine.cpu).set_cpu_limit(machine.cpu)
    task.set_memory_request(machine.memory).set_memory_limit(machine.memory)
    if machine.distribution != "default":
        task.set_env_variable(distribution.ENV, machine.distribution)
    return task


def worker_pool_specs(container: dict, machine: TrainingMachine) -> list[dict]:
    """The Vertex AI CustomJob worker pools that run a compiled task's `container` (the spec's executor: image,
    command, args, env) on `machine`, in the API's field names."""
    machine_spec: dict = {"machine_type": machine.machine_type}
    if machine.accelerator_type:
        machine_spec |= {"accelerator_type": machine.accelerator_type, "accelerator_count": machine.accelerator_count}
    env = [{"name": e["name"], "value": e["value"]} for e in container.get("env", [])]
    return [
        {
            "machine_spec": machine_spec,
            "replica_count": machine.replica_count,
            "container_spec": {
                "image_uri": container["image"],
                "command": list(container.get("command", [])),
                "args": list(container.get("args", [])),
                "env": env,
            },
        }
    ]
