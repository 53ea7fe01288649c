"""Dataflow options for the features stage, parsed and validated by Beam's own PipelineOptions."""

import pytest
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from components.cloud.dataflow import features_beam_args, validate_dataflow_args

IMAGE = "europe-west1-docker.pkg.dev/shop-prod/recsys/recsys-pipeline:0123456789ab"
GOOD = dict(
    project="shop-prod",
    region="europe-west1",
    temp_location="gs://shop-prod-dataflow/tmp",
    sdk_container_image=IMAGE,
    machine_type="n2-standard-8",
    max_num_workers=25,
)


def test_no_project_means_the_direct_runner():
    assert features_beam_args() == []


def test_dataflow_args_carry_the_component_image_and_pipeline_parameters():
    args = features_beam_args(
        **GOOD, service_account_email="features@shop-prod.iam.gserviceaccount.com", job_name="features-20261125"
    )
    options = validate_dataflow_args(args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == ("shop-prod", "europe-west1", GOOD["temp_location"])
    assert cloud.staging_location == "gs://shop-prod-dataflow/tmp/staging"
    assert cloud.service_account_email == "features@shop-prod.iam.gserviceaccount.com"
    workers = options.view_as(WorkerOptions)
    assert workers.sdk_container_image == IMAGE, "workers must run the image that holds the project's code"
    assert (workers.machine_type, workers.max_num_workers) == ("n2-standard-8", 25)
    assert options.view_as(SetupOptions).sdk_location == "container"
    assert "--dry_run=True" not in args


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(region=""), "needs region"),
        (dict(sdk_container_image=""), "needs sdk_container_image"),
        (dict(sdk_container_image="recsys-pipeline:0123456789ab"), "local name"),
        (dict(temp_location="gs://x/tmp"), "Invalid GCS bucket"),
        (dict(temp_location="/tmp/local"), "Invalid GCS path"),
        (dict(project="Shop_Prod"), "Invalid Project ID"),
        (dict(max_num_workers=0), "max_num_workers"),
    ],
)
def test_bad_dataflow_parameters_fail_with_the_reason(change, message):
    with pytest.raises(ValueError, match=message):
        features_beam_args(**{**GOOD, **change})


def test_beam_validator_catches_what_the_builder_does_not_check():
    args = features_beam_args(**GOOD)
    with pytest.raises(ValueError, match="cannot exceed max_num_workers"):
        validate_dataflow_args(args + ["--num_workers=40"])
    with pytest.raises(ValueError, match="does not know these options: \\['max_workers'\\]"):
        validate_dataflow_args(args + ["--max_workers=3"])
    with pytest.raises(ValueError, match="--runner=DataflowRunner"):
        validate_dataflow_args([a for a in args if not a.startswith("--runner")])
