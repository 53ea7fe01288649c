"""Submits a compiled pipeline spec to Vertex AI Pipelines or to a Kubeflow Pipelines host.

Credentials come only from Application Default Credentials (or the job's service account on
Vertex); nothing secret is read here or written into the spec. `submit=False` builds the real
client objects without sending anything, which is how the tests check them offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from components.cloud import dataflow, resources
from components.warehouse import bigquery_names

DEFAULT_LABELS = {"app": "shop-recsys"}
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_CRON_FIELDS = 5


def pipeline_root(bucket: str) -> str:
    """gs://BUCKET/pipeline-root; `bucket` may be given with or without the gs:// prefix."""
    name = bucket[len("gs://") :] if bucket.startswith("gs://") else bucket
    name = name.strip("/")
    if not name:
        raise ValueError("a GCS bucket is required for the Vertex pipeline root")
    return f"gs://{name}/pipeline-root"


def run_labels(spec_path: str | Path, labels: dict[str, str] | None = None) -> dict[str, str]:
    """Default labels, the image tag the spec pins (so a run can be traced to its code), then `labels`."""
    merged = dict(DEFAULT_LABELS)
    tag = pinned_image_tag(spec_path)
    if tag:
        merged["code-version"] = tag
    merged.update(labels or {})
    for key, value in merged.items():
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(str(value)):
            raise ValueError(f"label {key}={value!r} breaks GCP label rules (lower case, digits, _ and -, <= 63 chars)")
    return merged


def pinned_image_tag(spec_path: str | Path) -> str:
    """The tag of the image the spec pins, as a label value ('' for an untagged or digest reference)."""
    image = pinned_image(spec_path)
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    return re.sub(r"[^a-z0-9_-]", "-", tag.lower())[:63]


def production_parameters(
    spec_path: str | Path,
    project: str,
    region: str,
    bucket: str,
    warehouse_dataset: str = "warehouse",
    destination_dataset: str = "recommendations",
    use_dataflow: bool = True,
    machine_type: str = dataflow.DEFAULT_MACHINE_TYPE,
    max_num_workers: int = dataflow.DEFAULT_MAX_NUM_WORKERS,
    dataflow_service_account: str = "",
) -> dict[str, Any]:
    """Pipeline arguments for a production run: BigQuery in and out, the registry folder on the bucket
    (Vertex mounts it at /gcs/), the Model Registry's project, and Dataflow for the features stage,
    whose workers run the image the spec pins. Fails if the spec does not take one of them."""
    bucket_name = pipeline_root(bucket).split("/")[2]
    bigquery_names.validate_project(project)
    bigquery_names.validate_dataset(warehouse_dataset)
    bigquery_names.validate_dataset(destination_dataset)
    values: dict[str, Any] = {
        "warehouse_uri": f"bigquery://{project}.{warehouse_dataset}",
        "destination": f"bigquery://{project}.{destination_dataset}",
        "registry_uri": f"/gcs/{bucket_name}/registry",
        "gcp_project": project,
        "gcp_region": region,
        "beam_args": "[]",
    }
    if use_dataflow:
        image = pinned_image(spec_path)
        values["beam_args"] = json.dumps(
            dataflow.features_beam_args(
                project,
                region,
                f"gs://{bucket_name}/dataflow/tmp",
                image,
                machine_type,
                max_num_workers,
                service_account_email=dataflow_service_account,
            )
        )
    accepted = set(yaml.safe_load(Path(spec_path).read_text())["root"]["inputDefinitions"]["parameters"])
    missing = sorted(set(values) - accepted)
    if missing:
        raise ValueError(f"the compiled spec takes no parameter(s) {missing}; recompile with the current DAG")
    return values


def pinned_image(spec_path: str | Path) -> str:
    """The CPU image the spec's executors run (the GPU variant of trainers aside)."""
    spec = yaml.safe_load(Path(spec_path).read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
    cpu = {image for image in images if not image.endswith("-gpu")}
    if len(cpu) != 1:
        raise ValueError(f"expected one pinned CPU image in the spec, found {sorted(cpu)}")
    return cpu.pop()


TRAINER_EXECUTORS = ("exec-retrieval", "exec-ranking", "exec-ranking-2")  # retrieval, DIEN, the DIN baseline


def trainer_custom_jobs(
    spec_path: str | Path,
    project: str,
    region: str,
    bucket: str,
    machine: resources.TrainingMachine | None = None,
    credentials=None,
) -> dict:
    """The Vertex AI custom job each trainer task of the compiled spec runs as on `machine` (default: the one
    RECSYS_TRAINING_MACHINE names, which the spec was compiled for): {executor: aiplatform.CustomJob}, built with
    the SDK and never submitted, so a run can show what it asks for (machine type, GPUs, replicas) before it does."""
    from google.cloud import aiplatform

    machine = machine or resources.training_machine()
    executors = yaml.safe_load(Path(spec_path).read_text())["deploymentSpec"]["executors"]
    missing = [name for name in TRAINER_EXECUTORS if name not in executors]
    if missing:
        raise ValueError(f"{spec_path}: no trainer executor(s) {missing}; recompile with the current DAG")
    for name in TRAINER_EXECUTORS:
        limits = executors[name]["container"].get("resources", {})
        accelerator = limits.get("accelerator", {}).get("resourceType", "")
        if accelerator != machine.accelerator_type:
            raise ValueError(
                f"{spec_path}: {name} was compiled for accelerator {accelerator or 'none'!r}, not the "
                f"{machine.machine_type}'s {machine.accelerator_type or 'none'!r}; compile with {resources.TRAINING_MACHINE_ENV}"
            )
    return {
        name: aiplatform.CustomJob(
            display_name=f"shop-recsys-{name.removeprefix('exec-')}",
            worker_pool_specs=resources.worker_pool_specs(executors[name]["container"], machine),
            staging_bucket=pipeline_root(bucket),
            project=project,
            location=region,
            credentials=credentials,
        )
        for name in TRAINER_EXECUTORS
    }


def describe_custom_job(job) -> str:
    """'a2-highgpu-2g + 2 x NVIDIA_TESLA_A100, 1 replica': a custom job's first worker pool, as a run prints it."""
    pool = job.job_spec.worker_pool_specs[0]
    gpus = pool.machine_spec.accelerator_count
    accelerator = f" + {gpus} x {pool.machine_spec.accelerator_type.name}" if gpus else ""
    return f"{pool.machine_spec.machine_type}{accelerator}, {pool.replica_count} replica(s)"


def check_cron(schedule_cron: str, fields: int = _CRON_FIELDS) -> str:
    """Refuses a schedule without exactly `fields` cron fields before Vertex does, with an example; returns it."""
    if len(schedule_cron.split()) != fields:
        raise ValueError(f"schedule {schedule_cron!r} must have {fields} cron fields, e.g. '0 3 * * *'")
    return schedule_cron


def submit_vertex(
    spec_path: str | Path,
    project: str,
    region: str,
    bucket: str,
    service_account: str | None = None,
    labels: dict[str, str] | None = None,
    enable_caching: bool = True,
    schedule_cron: str | None = None,
    parameter_values: dict[str, Any] | None = None,
    credentials=None,
    submit: bool = True,
    display_name: str = "shop-recsys",
    network: str | None = None,
):
    """Builds an aiplatform.PipelineJob with a GCS pipeline root and submits it, or schedules it daily.

    Returns the PipelineJob, or the PipelineJobSchedule when `schedule_cron` (5-field, UTC) is given.
    With submit=False nothing is sent: the returned object shows exactly what would be.
    """
    from google.cloud import aiplatform

    if not project or not region:
        raise ValueError("Vertex AI needs a project and a region")
    for name, trainer in trainer_custom_jobs(spec_path, project, region, bucket, credentials=credentials).items():
        print(f"vertex: {name.removeprefix('exec-')} runs as {describe_custom_job(trainer)}")
    job = aiplatform.PipelineJob(
        display_name=display_name,
        template_path=str(spec_path),
        pipeline_root=pipeline_root(bucket),
        parameter_values=dict(parameter_values or {}),
        enable_caching=enable_caching,
        labels=run_labels(spec_path, labels),
        credentials=credentials,
        project=project,
        location=region,
    )
    if schedule_cron:
        schedule = aiplatform.PipelineJobSchedule(
            pipeline_job=job,
            display_name=f"{display_name}-daily",
            credentials=credentials,
            project=project,
            location=region,
        )
        if submit:
            schedule.create(
                cron=check_cron(schedule_cron),
                max_concurrent_run_count=1,
                service_account=service_account,
                network=network,
            )
        else:
            check_cron(schedule_cron)
        return schedule
    if submit:
        job.submit(service_account=service_account, network=network)
    return job


def kfp_cron(schedule_cron: str) -> str:
    """KFP's scheduler takes 6 cron fields (seconds first); accept the usual 5 as well."""
    fields = schedule_cron.split()
    if len(fields) == _CRON_FIELDS:
        return "0 " + schedule_cron
    return check_cron(schedule_cron, fields=6)


def submit_kfp(
    spec_path: str | Path,
    host: str,
    parameter_values: dict[str, Any] | None = None,
    experiment_name: str = "shop-recsys",
    run_name: str | None = None,
    namespace: str | None = None,
    enable_caching: bool = True,
    schedule_cron: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
):
    """Submits to a Kubeflow Pipelines host (e.g. http://localhost:8080 after a port-forward on kind/minikube).

    Returns kfp's RunPipelineResult, or the recurring run when `schedule_cron` is given.
    """
    import kfp

    if not host:
        raise ValueError("KFP needs a host, e.g. http://localhost:8080")
    client = kfp.Client(host=host, namespace=namespace or "kubeflow")
    arguments = dict(parameter_values or {})
    if schedule_cron:
        experiment = client.create_experiment(experiment_name, namespace=namespace)
        return client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=run_name or f"{experiment_name}-daily",
            cron_expression=kfp_cron(schedule_cron),
            max_concurrency=1,
            params=arguments,
            pipeline_package_path=str(spec_path),
            enable_caching=enable_caching,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    return client.create_run_from_pipeline_package(
        str(spec_path),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment_name,
        namespace=namespace,
        pipeline_root=pipeline_root,
        enable_caching=enable_caching,
        service_account=service_account,
    )
