"""Vertex AI and KFP submission from the compiled spec, checked without sending anything off the machine.

Vertex: the real aiplatform.PipelineJob is built with anonymous credentials; to see the request a submit
sends, only the generated GAPIC client method (the transport boundary) is replaced by a recorder, and
the SDK's check of the pipeline-root bucket (Cloud Storage calls: exists, ownership) is skipped.
KFP: the real kfp.Client talks HTTP to a small in-process stand-in for the KFP v2beta1 REST API.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from unittest import mock

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform.utils import gcs_utils
from google.cloud.aiplatform_v1.services.pipeline_service import PipelineServiceClient
from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient

from components.image import IMAGE
from pipelines.submit import kfp_cron, submit_kfp, submit_vertex

VERTEX = dict(
    project="shop-prod",
    region="europe-west1",
    bucket="shop-prod-pipelines",
    service_account="pipelines@shop-prod.iam.gserviceaccount.com",
    credentials=AnonymousCredentials(),
)
PARAMS = {"warehouse_uri": "bigquery://shop-prod.warehouse", "destination": "bigquery://shop-prod.recs", "top_k": 50}


def test_pipeline_job_runtime_config(spec_path):
    job = submit_vertex(spec_path, **VERTEX, parameter_values=PARAMS, labels={"team": "recs"}, submit=False)
    resource = job._gca_resource
    assert resource.runtime_config.gcs_output_directory == "gs://shop-prod-pipelines/pipeline-root"
    values = resource.runtime_config.parameter_values
    assert values["warehouse_uri"] == "bigquery://shop-prod.warehouse" and values["top_k"] == 50
    assert dict(resource.labels) == {"app": "shop-recsys", "code-version": IMAGE.rsplit(":", 1)[1], "team": "recs"}
    assert (job.project, job.location) == ("shop-prod", "europe-west1")
    assert resource.pipeline_spec["pipelineInfo"]["name"] == "shop-recommender"


def test_caching_flag_reaches_every_task(spec_path):
    job = submit_vertex(spec_path, **VERTEX, parameter_values=PARAMS, enable_caching=False, submit=False)
    tasks = job._gca_resource.pipeline_spec["root"]["dag"]["tasks"]
    compiled = yaml.safe_load(spec_path.read_text())["root"]["dag"]["tasks"]
    assert tasks.keys() == compiled.keys()
    assert any(task.get("cachingOptions", {}).get("enableCache") for task in compiled.values())
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())


def test_submit_sends_the_job_with_the_service_account(spec_path):
    sent = {}

    def create_pipeline_job(self, parent, pipeline_job, pipeline_job_id, timeout=None, **_):
        sent.update(parent=parent, job=pipeline_job)
        pipeline_job.name = f"{parent}/pipelineJobs/{pipeline_job_id}"
        return pipeline_job

    with (
        mock.patch.object(PipelineServiceClient, "create_pipeline_job", create_pipeline_job),
        mock.patch.object(gcs_utils, "create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist"),
    ):
        job = submit_vertex(spec_path, **VERTEX, parameter_values=PARAMS)
    assert sent["parent"] == "projects/shop-prod/locations/europe-west1"
    assert sent["job"].service_account == VERTEX["service_account"]
    assert sent["job"].runtime_config.gcs_output_directory == "gs://shop-prod-pipelines/pipeline-root"
    assert job.resource_name.startswith("projects/shop-prod/locations/europe-west1/pipelineJobs/")


def test_daily_schedule(spec_path):
    sent = {}

    def create_schedule(self, parent, schedule, timeout=None, **_):
        sent.update(parent=parent, schedule=schedule)
        schedule.name = f"{parent}/schedules/1"
        return schedule

    with mock.patch.object(ScheduleServiceClient, "create_schedule", create_schedule):
        submit_vertex(spec_path, **VERTEX, parameter_values=PARAMS, schedule_cron="0 3 * * *")
    schedule = sent["schedule"]
    assert schedule.cron == "0 3 * * *" and schedule.max_concurrent_run_count == 1
    request = schedule.create_pipeline_job_request
    assert request.parent == "projects/shop-prod/locations/europe-west1"
    assert request.pipeline_job.service_account == VERTEX["service_account"]
    assert request.pipeline_job.runtime_config.gcs_output_directory == "gs://shop-prod-pipelines/pipeline-root"


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(bucket=""), "GCS bucket"),
        (dict(project=""), "project and a region"),
        (dict(labels={"Team": "x"}), "label Team"),
        (dict(schedule_cron="daily"), "5 cron fields"),
    ],
)
def test_bad_vertex_arguments_fail_before_anything_is_sent(spec_path, change, message):
    with pytest.raises(ValueError, match=message):
        submit_vertex(spec_path, **{**VERTEX, **change}, submit=False)


class FakeKfpApi(BaseHTTPRequestHandler):
    """Answers the KFP v2beta1 calls kfp.Client makes to start a run, and records them."""

    calls: list = []

    def _reply(self, payload):
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.calls.append(("GET", self.path, None))
        self._reply({"experiments": []} if "/experiments" in self.path else {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.calls.append(("POST", self.path, body))
        if self.path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path.endswith("/recurringruns"):
            self._reply({"recurring_run_id": "rr-1", **body})
        else:
            self._reply({"run_id": "run-1", **body})

    def log_message(self, *args):
        pass


@pytest.fixture()
def kfp_host():
    FakeKfpApi.calls = []
    server = HTTPServer(("127.0.0.1", 0), FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_submit_kfp_creates_a_run_with_the_compiled_spec(spec_path, kfp_host):
    result = submit_kfp(spec_path, kfp_host, parameter_values=PARAMS, enable_caching=False)
    assert result.run_id == "run-1"
    run = next(body for method, path, body in FakeKfpApi.calls if method == "POST" and path.endswith("/runs"))
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"]["top_k"] == 50
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "shop-recommender"
    compiled = yaml.safe_load(spec_path.read_text())["root"]["dag"]["tasks"]
    assert any(task.get("cachingOptions", {}).get("enableCache") for task in compiled.values())
    sent = run["pipeline_spec"]["root"]["dag"]["tasks"]
    assert sent.keys() == compiled.keys()
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in sent.values())


def test_submit_kfp_schedule_uses_six_field_cron(spec_path, kfp_host):
    submit_kfp(spec_path, kfp_host, parameter_values=PARAMS, schedule_cron="0 3 * * *")
    recurring = next(body for method, path, body in FakeKfpApi.calls if path.endswith("/recurringruns"))
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert recurring["max_concurrency"] == "1" or recurring["max_concurrency"] == 1
    assert kfp_cron("0 0 3 * * *") == "0 0 3 * * *"
    with pytest.raises(ValueError, match="6 cron fields"):
        kfp_cron("* * * *")


def test_production_parameters_send_features_to_dataflow_in_the_pinned_image(spec_path):
    from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions

    from pipelines.submit import production_parameters

    with pytest.raises(ValueError, match="local name"):
        production_parameters(spec_path, "shop-prod", "europe-west1", "shop-prod-pipelines")
    pushed = "europe-west1-docker.pkg.dev/shop-prod/recsys/recsys-pipeline:" + IMAGE.rsplit(":", 1)[1]
    pushed_spec = spec_path.with_name("pushed.yaml")
    pushed_spec.write_text(spec_path.read_text().replace(f"image: {IMAGE}", f"image: {pushed}"))
    values = production_parameters(
        pushed_spec, "shop-prod", "europe-west1", "gs://shop-prod-pipelines", max_num_workers=20
    )
    assert values["warehouse_uri"] == "bigquery://shop-prod.warehouse"
    assert values["registry_uri"] == "/gcs/shop-prod-pipelines/registry"
    options = PipelineOptions(json.loads(values["beam_args"]))
    assert options.view_as(WorkerOptions).sdk_container_image == pushed
    assert options.view_as(WorkerOptions).max_num_workers == 20
    job = submit_vertex(pushed_spec, **VERTEX, parameter_values=values, submit=False)
    assert job._gca_resource.runtime_config.parameter_values["beam_args"] == values["beam_args"]
