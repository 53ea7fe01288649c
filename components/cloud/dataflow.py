"""Beam options that move the features stage from the DirectRunner to Dataflow.

The features component takes a `beam_args` list; `features_beam_args` produces it from pipeline
parameters. Workers run the component image itself (`--sdk_container_image`), so they hold the
project's code and exactly the locked dependencies; the image's production target carries Beam's
worker boot for that. Every list returned here has passed Beam's own PipelineOptionsValidator.
"""

from __future__ import annotations

import re

DEFAULT_MACHINE_TYPE = "n1-standard-4"
DEFAULT_MAX_NUM_WORKERS = 10
_JOB_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def features_beam_args(
    project: str = "",
    region: str = "",
    temp_location: str = "",
    sdk_container_image: str = "",
    machine_type: str = DEFAULT_MACHINE_TYPE,
    max_num_workers: int = DEFAULT_MAX_NUM_WORKERS,
    service_account_email: str = "",
    subnetwork: str = "",
    job_name: str = "",
) -> list[str]:
    """[] (DirectRunner) when no project is given, else validated DataflowRunner arguments.

    Takes plain strings and ints so a KFP component can pass its pipeline parameters straight through.
    """
    if not project:
        return []
    if not region or not temp_location or not sdk_container_image:
        missing = [
            n
            for n, v in (
                ("region", region),
                ("temp_location", temp_location),
                ("sdk_container_image", sdk_container_image),
            )
            if not v
        ]
        raise ValueError(f"Dataflow needs {', '.join(missing)} besides project {project!r}")
    if "/" not in sdk_container_image.split(":")[0]:
        raise ValueError(
            f"sdk_container_image {sdk_container_image!r} is a local name; Dataflow workers pull from a registry "
            "(build with `make images REGISTRY=REGION-docker.pkg.dev/PROJECT/REPO`)"
        )
    if job_name and not _JOB_NAME.fullmatch(job_name):
        raise ValueError(f"job_name {job_name!r} must match {_JOB_NAME.pattern}")
    args = [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location={temp_location}",
        f"--staging_location={temp_location.rstrip('/')}/staging",
        f"--machine_type={machine_type}",
        f"--max_num_workers={int(max_num_workers)}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        f"--sdk_container_image={sdk_container_image}",
        # The image already holds Beam; do not stage an SDK tarball next to it.
        "--sdk_location=container",
        "--experiments=use_runner_v2",
    ]
    if service_account_email:
        args.append(f"--service_account_email={service_account_email}")
    if subnetwork:
        args += [f"--subnetwork={subnetwork}", "--no_use_public_ips"]
    if job_name:
        args.append(f"--job_name={job_name}")
    validate_dataflow_args(args)
    return args


def validate_dataflow_args(args: list[str]):
    """Parses `args` with Beam's PipelineOptions and runs the checks DataflowRunner runs before submitting.

    `--dry_run` is added for validation only: it stops the validator from calling GCS to look at the
    bucket's soft-delete policy, so this works offline. Returns the PipelineOptions; raises ValueError.
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    unknown = _unknown_args(args)
    if unknown:
        raise ValueError(f"Beam does not know these options: {unknown}")
    options = PipelineOptions(list(args) + ["--dry_run=True"])
    if options.view_as(StandardOptions).runner != "DataflowRunner":
        raise ValueError("Dataflow arguments must set --runner=DataflowRunner")
    validator = PipelineOptionsValidator(options, DataflowRunner())
    # Beam answers two bad GCS locations by creating a default bucket over the network: refuse them first.
    cloud = options.view_as(GoogleCloudOptions)
    errors = [e for name in ("temp_location", "staging_location") for e in validator.validate_gcs_path(cloud, name)]
    errors = errors or validator.validate()
    if errors:
        raise ValueError("invalid Dataflow options: " + "; ".join(errors))
    return PipelineOptions(list(args))


def _unknown_args(args: list[str]) -> list[str]:
    """Options no Beam options class defines (a typo such as --max_workers would otherwise be dropped silently)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(list(args))
    known = options.get_all_options()
    return sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
