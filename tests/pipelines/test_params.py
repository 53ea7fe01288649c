"""Pipeline parameters of a run (`--param NAME=VALUE`, `make pipeline-run PARAMS=...`), checked against the DAG."""

import datetime as dt
import inspect
import sys

import pytest

from components import run_time
from pipelines import run, submit
from pipelines.pipeline import recommender_pipeline


def test_known_parameters_are_typed_by_the_signature():
    values = run.parse_params(["gate_on_ope=TRUE", "top_k=5", "ope_margin=0.25", "ope_estimator=snips"])
    assert values == {"gate_on_ope": True, "top_k": 5, "ope_margin": 0.25, "ope_estimator": "snips"}
    assert type(values["top_k"]) is int and type(values["gate_on_ope"]) is bool
    assert run.parse_params(["enable_bandit=false"]) == {"enable_bandit": False}
    assert set(run.parameter_types()) == set(inspect.signature(recommender_pipeline.pipeline_func).parameters)


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(ValueError, match="gate_on_opee: the pipeline has no such parameter; known: .*gate_on_ope, "):
        run.parse_params(["gate_on_opee=true"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("top_k=5.5", "top_k takes an integer"),
        ("gate_on_ope=yes", "gate_on_ope takes true or false"),
        ("ope_margin=nan", "ope_margin takes a finite number"),
        ("ope_margin=", "ope_margin takes a finite number"),
        ("top_k", "must be NAME=VALUE"),
        ("run_time=tomorrow", "run_time 'tomorrow' is not an ISO-8601 time"),
    ],
)
def test_mistyped_value_names_the_parameter_and_type(text, expected):
    with pytest.raises(ValueError, match=expected):
        run.parse_params([text])


def test_a_parameter_given_twice_or_set_by_the_target_is_refused():
    with pytest.raises(ValueError, match="top_k is given twice"):
        run.parse_params(["top_k=5", "top_k=6"])
    with pytest.raises(ValueError, match="the local run sets it from --output"):
        run.parse_params(["destination=duckdb:///tmp/x.duckdb"])
    assert run.parse_params(["registry_uri=/tmp/registry"], target="kfp") == {"registry_uri": "/tmp/registry"}


def test_command_line_error_is_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pipelines.run", "--param", "top_k=many"])
    with pytest.raises(SystemExit) as exit_info:
        run.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--param top_k='many': top_k takes an integer")


def test_remote_runs_take_the_same_parameter_values(monkeypatch, tmp_path):
    sent = {}
    monkeypatch.setattr(submit, "submit_kfp", lambda **kwargs: sent.update(kwargs) or "run")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "pipelines.run",
            "--target",
            "kfp",
            "--host",
            "http://127.0.0.1:1",
            "--spec",
            str(tmp_path / "p.yaml"),
            "--warehouse-uri",
            "bigquery://shop-prod.warehouse",
            "--destination",
            "bigquery://shop-prod.recs",
            "--param",
            "top_k=7",
            "--param",
            "gate_on_ope=true",
        ],
    )
    run.main()
    values = sent["parameter_values"]
    assert run_time.parse(values.pop("run_time")) <= dt.datetime.now(dt.timezone.utc)  # a one-off run's own time
    assert values == {
        "warehouse_uri": "bigquery://shop-prod.warehouse",
        "destination": "bigquery://shop-prod.recs",
        "seed": 0,
        "top_k": 7,
        "gate_on_ope": True,
    }


def test_vertex_run_takes_the_parameters_over_the_production_ones(monkeypatch, tmp_path):
    sent = {}
    monkeypatch.setattr(submit, "submit_vertex", lambda **kwargs: sent.update(kwargs) or "job")
    monkeypatch.setattr(
        submit, "pinned_image", lambda _: "europe-west1-docker.pkg.dev/shop-prod/recsys/recsys-pipeline:t"
    )
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "pipelines.run",
            "--target",
            "vertex",
            "--project",
            "shop-prod",
            "--region",
            "europe-west1",
            "--bucket",
            "shop-pipelines",
            "--spec",
            str(tmp_path / "p.yaml"),
            "--seed",
            "3",
            "--param",
            "ranking_epochs=1",
        ],
    )
    monkeypatch.setattr(sys, "argv", sys.argv + ["--schedule", "0 3 * * *"])
    run.main()
    values = sent["parameter_values"]
    assert "run_time" not in values  # each scheduled run takes its job's creation time
    assert values["warehouse_uri"] == "bigquery://shop-prod.warehouse" and values["gcp_region"] == "europe-west1"
    assert (values["seed"], values["ranking_epochs"]) == (3, 1)


def _remote_main(monkeypatch, tmp_path, target, *flags):
    """pipelines.run.main for a remote target with submission and compilation stubbed; returns what was sent."""
    from pipelines import compile as compile_module

    sent = {}
    monkeypatch.setattr(submit, f"submit_{target}", lambda **kwargs: sent.update(kwargs) or "run")
    monkeypatch.setattr(submit, "production_parameters", lambda *args: {})
    monkeypatch.setattr(compile_module, "compile_pipeline", lambda path: sent.setdefault("compiled", path))
    common = {
        "kfp": ["--host", "http://127.0.0.1:1", "--destination", "bigquery://shop-prod.recs"],
        "vertex": ["--project", "shop-prod", "--region", "europe-west1", "--bucket", "shop-pipelines"],
    }[target]
    monkeypatch.setattr(sys, "argv", ["pipelines.run", "--target", target, "--spec", str(tmp_path / "p.yaml")])
    monkeypatch.setattr(sys, "argv", sys.argv + common + list(flags))
    run.main()
    return sent


@pytest.mark.parametrize("target", ["vertex", "kfp"])
@pytest.mark.parametrize(
    "uri, expected",
    [
        ("bigquery://shop-prod.ds; DROP", "BigQuery dataset name 'ds; DROP'"),
        ("bigquery://Shop.warehouse", "BigQuery project id 'Shop'"),
        ("bigquery://shop-prod.analytics_1?user_key=email", "user_key='email'"),
        ("gs://bucket/warehouse", "unsupported warehouse URI"),
    ],
)
def test_case13_a_remote_runs_warehouse_uri_is_checked_before_anything_is_submitted(
    monkeypatch, tmp_path, capsys, target, uri, expected
):
    with pytest.raises(SystemExit) as exit_info:
        _remote_main(monkeypatch, tmp_path, target, "--warehouse-uri", uri)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--warehouse-uri {uri!r}: " in last and expected in last, last


@pytest.mark.parametrize("target", ["vertex", "kfp"])
def test_case13_a_ga4_warehouse_uri_with_its_user_key_option_is_accepted(monkeypatch, tmp_path, target):
    uri = "bigquery://shop-prod.analytics_123456?user_key=user_pseudo_id"
    sent = _remote_main(monkeypatch, tmp_path, target, "--warehouse-uri", uri)
    assert sent["parameter_values"]["warehouse_uri"] == uri


def test_case13_a_kfp_runs_destination_is_checked_naming_it(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _remote_main(
            monkeypatch, tmp_path, "kfp", "--warehouse-uri", "bigquery://shop-prod.wh", "--destination", "s3://x"
        )
    assert "--destination 's3://x': unknown destination" in capsys.readouterr().err
