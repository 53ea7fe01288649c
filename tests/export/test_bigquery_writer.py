"""The BigQuery writer, driven through the real google-cloud-bigquery client with the HTTP layer replaced.

Nothing leaves the machine: a recording session stands in for the client's HTTP transport and
answers the way the BigQuery REST API does, so the test sees the exact requests a real run sends.
"""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from components import schema
from components.export import writers

DAY = dt.date(2026, 11, 25)


class Response:
    def __init__(self, payload: dict, status: int = 200):
        self.status_code = status
        self.headers = {"content-type": "application/json"}
        self.content = json.dumps(payload).encode()
        self.text = self.content.decode()
        self.request = None

    def json(self):
        return json.loads(self.content)


class RecordingSession:
    """Answers tables.insert, the multipart jobs upload and jobs.get like the REST API."""

    is_mtls = False

    def __init__(self):
        self.requests: list[tuple[str, str, object]] = []
        self.jobs: dict[str, dict] = {}
        self.uploads: list[bytes] = []

    def request(self, method, url, data=None, headers=None, **kwargs):
        self.requests.append((method, url, data))
        if "uploadType=resumable" in url:  # initiate: the job resource; the bytes follow in PUTs
            job = json.loads(data)
            job["status"] = {"state": "DONE"}
            job["jobReference"].setdefault("location", "US")
            self.jobs[job["jobReference"]["jobId"]] = job
            response = Response({})
            response.headers["location"] = f"https://upload.invalid/session/{job['jobReference']['jobId']}"
            return response
        if method == "PUT" and "/session/" in url:
            self.uploads.append(data)
            return Response(self.jobs[url.rsplit("/", 1)[1]])
        if method == "POST" and url.split("?")[0].endswith("/jobs"):  # jobs.insert (load from a URI)
            job = json.loads(data)
            job["status"] = {"state": "DONE"}
            self.jobs[job["jobReference"]["jobId"]] = job
            return Response(job)
        if method == "POST" and url.split("?")[0].endswith("/tables"):
            return Response(json.loads(data))
        if method == "GET" and "/jobs/" in url:
            return Response(self.jobs[url.split("/jobs/")[1].split("?")[0]])
        raise AssertionError(f"unexpected request {method} {url}")

    def load_jobs(self) -> list[dict]:
        return [json.loads(d) for m, u, d in self.requests if "uploadType=resumable" in u]


@pytest.fixture
def parquet_files(tmp_path):
    generated = dt.datetime(2026, 11, 25, 3, tzinfo=dt.timezone.utc)
    recs = pa.Table.from_pylist(
        [
            dict(
                user_id="u1",
                rank=1,
                item_id="i1",
                score=0.5,
                source="funnel",
                variant="control",
                model_version="v1",
                run_id="r",
                generated_at=generated,
            )
        ],
        schema=schema.RECOMMENDATIONS,
    )
    sims = pa.Table.from_pylist(
        [
            dict(
                item_id="i1",
                rank=1,
                similar_item_id="i2",
                score=0.9,
                model_version="v1",
                run_id="r",
                generated_at=generated,
            )
        ],
        schema=schema.SIMILAR_ITEMS,
    )
    files = {"recommendations": tmp_path / "r.parquet", "similar_items": tmp_path / "s.parquet"}
    pq.write_table(recs, files["recommendations"])
    pq.write_table(sims, files["similar_items"])
    return files


def test_load_job_config_replaces_one_day_partition():
    config = writers.load_job_config(schema.RECOMMENDATIONS)
    assert config.source_format == bigquery.SourceFormat.PARQUET
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert config.create_disposition == bigquery.CreateDisposition.CREATE_NEVER
    assert config.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
    assert config.time_partitioning.field == "generated_at"
    fields = {f.name: (f.field_type, f.mode) for f in config.schema}
    assert fields == {
        "user_id": ("STRING", "REQUIRED"),
        "rank": ("INT64", "REQUIRED"),
        "item_id": ("STRING", "REQUIRED"),
        "score": ("FLOAT64", "REQUIRED"),
        "source": ("STRING", "REQUIRED"),
        "variant": ("STRING", "REQUIRED"),
        "model_version": ("STRING", "REQUIRED"),
        "run_id": ("STRING", "REQUIRED"),
        "generated_at": ("TIMESTAMP", "REQUIRED"),
    }
    assert writers.partition_id("p.d.recommendations", DAY) == "p.d.recommendations$20261125"


def test_write_sends_partitioned_table_and_decorated_truncating_load_jobs(parquet_files):
    session = RecordingSession()
    client = bigquery.Client(project="shop-prod", credentials=AnonymousCredentials(), _http=session)
    writers.BigQueryDestination("shop-prod", "recs").write(parquet_files, DAY, client=client)

    created = [json.loads(d) for m, u, d in session.requests if m == "POST" and u.split("?")[0].endswith("/tables")]
    assert [t["tableReference"]["tableId"] for t in created] == ["recommendations", "similar_items"]
    assert all(t["timePartitioning"] == {"type": "DAY", "field": "generated_at"} for t in created)
    assert created[0]["clustering"] == {"fields": ["user_id"]}

    jobs = session.load_jobs()
    assert len(jobs) == 2
    for job, name in zip(jobs, ["recommendations", "similar_items"]):
        load = job["configuration"]["load"]
        assert load["destinationTable"] == {
            "projectId": "shop-prod",
            "datasetId": "recs",
            "tableId": f"{name}$20261125",
        }
        assert load["writeDisposition"] == "WRITE_TRUNCATE" and load["sourceFormat"] == "PARQUET"
        assert load["createDisposition"] == "CREATE_NEVER"
        assert [f["name"] for f in load["schema"]["fields"]] == writers.TABLE_SCHEMAS[name].names
    assert [bytes(b) for b in session.uploads] == [f.read_bytes() for f in parquet_files.values()]


def test_artifacts_on_gcs_fuse_load_straight_from_the_bucket():
    session = RecordingSession()
    client = bigquery.Client(project="shop-prod", credentials=AnonymousCredentials(), _http=session)
    files = {"recommendations": "/gcs/bucket/root/export/recommendations.parquet"}
    writers.BigQueryDestination("shop-prod", "recs").write(files, DAY, client=client)
    (job,) = [json.loads(d) for m, u, d in session.requests if m == "POST" and u.split("?")[0].endswith("/jobs")]
    load = job["configuration"]["load"]
    assert load["sourceUris"] == ["gs://bucket/root/export/recommendations.parquet"]
    assert load["destinationTable"]["tableId"] == "recommendations$20261125"
    assert load["writeDisposition"] == "WRITE_TRUNCATE" and not session.uploads


def test_gcs_fuse_paths_load_from_the_bucket():
    assert writers.load_source("/gcs/bucket/run/export/recommendations.parquet") == (
        "gs://bucket/run/export/recommendations.parquet"
    )
    assert writers.load_source("/tmp/x.parquet") is None


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("duckdb:///tmp/a/recs.duckdb", writers.DuckDBDestination(__import__("pathlib").Path("/tmp/a/recs.duckdb"))),
        ("bigquery://shop-prod.recs", writers.BigQueryDestination("shop-prod", "recs")),
    ],
)
def test_parse_destination(uri, expected):
    assert writers.parse_destination(uri) == expected


@pytest.mark.parametrize("uri", ["duckdb://", "bigquery://onlyproject", "bigquery://a.b.c", "s3://x"])
def test_bad_destinations_are_refused(uri):
    with pytest.raises(ValueError, match="destination"):
        writers.parse_destination(uri)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("bigquery://shop-prod.ds; DROP", "dataset name 'ds; DROP'"),
        ("bigquery://shop-prod.recs-eu", "dataset name 'recs-eu'"),
        ("bigquery://shop-prod.recs\n", "dataset name 'recs\\\\n'"),
        ("bigquery://shop.recs", "project id 'shop' must be 6-30"),
        ("bigquery://Shop-Prod.recs", "project id 'Shop-Prod'"),
        ("bigquery://shop-prod-.recs", "project id 'shop-prod-'"),
        ("bigquery://1shop-prod.recs", "project id '1shop-prod'"),
    ],
)
def test_case13_bigquery_destination_names_are_validated(uri, message):
    with pytest.raises(ValueError, match=f"destination .*BigQuery {message}"):
        writers.parse_destination(uri)


def test_case13_bigquery_names_follow_bigquerys_rules():
    from components.warehouse import bigquery_names

    assert writers.parse_destination("bigquery://shop-prod.2026_Recs") == writers.BigQueryDestination(
        "shop-prod", "2026_Recs"
    )  # a dataset may start with a digit and hold capitals
    assert bigquery_names.validate_table("Empfehlungen für-heute") == "Empfehlungen für-heute"
    for table in ("recs;", "recs`", "a.b", "", "x" * 1025):
        with pytest.raises(ValueError, match="BigQuery table name"):
            bigquery_names.validate_table(table)


def test_case13_run_entry_refuses_bad_bigquery_names(monkeypatch, capsys, tmp_path):
    import sys

    from pipelines import run, submit

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "pipelines.run",
            "--target",
            "kfp",
            "--host",
            "http://127.0.0.1:1",
            "--warehouse-uri",
            "bigquery://shop-prod.warehouse",
            "--destination",
            "bigquery://shop-prod.ds; DROP",
        ],
    )
    with pytest.raises(SystemExit):
        run.main()
    assert "destination 'bigquery://shop-prod.ds; DROP': BigQuery dataset name" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dataset name 'recs eu'"):
        submit.production_parameters(
            tmp_path / "never-read.yaml",
            "shop-prod",
            "europe-west1",
            "shop-prod-pipelines",
            destination_dataset="recs eu",
        )


def test_campaign_tables_are_day_partitioned_and_clustered_by_their_key():
    destination = writers.BigQueryDestination("my-project", "recs")
    for name, key in (("complementary_items", "item_id"), ("audiences", "target_id")):
        definition = destination.table(name)
        assert definition.time_partitioning.field == writers.PARTITION_COLUMN
        assert definition.clustering_fields == [key]
        assert [f.name for f in definition.schema] == writers.TABLE_SCHEMAS[name].names
        assert writers.load_job_config(writers.TABLE_SCHEMAS[name]).write_disposition == "WRITE_TRUNCATE"
