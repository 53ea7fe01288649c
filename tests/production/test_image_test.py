"""The image-test runner's own logic, without building an image: pinning, mounts, the buildah calls, checks."""

import json
import os
import stat

import pytest

from components.image import IMAGE
from tools import image_test

from .tiny_pipeline import compile_tiny


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    return image_test.load_pipeline_spec(compile_tiny(tmp_path_factory.mktemp("tiny") / "tiny.yaml"))


def test_spec_must_pin_the_image_under_test(tiny_spec):
    image_test.check_pinned(tiny_spec, IMAGE)
    with pytest.raises(ValueError, match="not pinned to other:1"):
        image_test.check_pinned(tiny_spec, "other:1")


def test_arguments_point_at_local_paths_the_spec_takes(tiny_spec, tmp_path):
    assert image_test.pipeline_arguments(tiny_spec, tmp_path) == {
        "destination": f"duckdb://{tmp_path}/recommendations.duckdb"
    }
    assert image_test.parse_param("margin_vs_baseline=-1.0") == ("margin_vs_baseline", -1.0)
    assert image_test.parse_param("warehouse_uri=duckdb:///x") == ("warehouse_uri", "duckdb:///x")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        image_test.parse_param("nothing")


def write_outputs(run_dir, epochs_metric=True, model_file=True):
    train = run_dir / "train"
    (train / "model").mkdir(parents=True)
    if model_file:
        (train / "model" / "saved_model.pb").write_bytes(b"x")
    metadata = {"epochs": 1.0} if epochs_metric else {}
    (train / "executor_output.json").write_text(
        json.dumps({"artifacts": {"metrics": {"artifacts": [{"name": "metrics", "metadata": metadata}]}}})
    )
    (run_dir / "publish" / "table").mkdir(parents=True)
    (run_dir / "publish" / "table" / "part-0.parquet").write_bytes(b"x")


def test_every_output_artifact_is_checked(tiny_spec, tmp_path):
    write_outputs(tmp_path / "ok")
    assert image_test.check_outputs(tiny_spec, tmp_path / "ok") == {"train": ["metrics", "model"], "publish": ["table"]}
    write_outputs(tmp_path / "empty-model", model_file=False)
    with pytest.raises(AssertionError, match="output artifact model is missing or empty"):
        image_test.check_outputs(tiny_spec, tmp_path / "empty-model")
    write_outputs(tmp_path / "no-metric-values", epochs_metric=False)
    assert image_test.check_outputs(tiny_spec, tmp_path / "no-metric-values")["train"] == ["metrics", "model"]
    (tmp_path / "no-metric-values" / "train" / "executor_output.json").write_text('{"artifacts": {}}')
    with pytest.raises(AssertionError, match="metrics artifact metrics is not in its executor output"):
        image_test.check_outputs(tiny_spec, tmp_path / "no-metric-values")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(AssertionError, match="no task wrote anything"):
        image_test.check_outputs(tiny_spec, tmp_path / "nothing")


def test_a_blessed_run_must_run_every_task_of_the_spec(tiny_spec, tmp_path):
    write_outputs(tmp_path)
    image_test.check_all_tasks_ran(tiny_spec, image_test.check_outputs(tiny_spec, tmp_path))
    with pytest.raises(AssertionError, match=r"did not run: \['publish'\]"):
        image_test.check_all_tasks_ran(tiny_spec, {"train": ["metrics", "model"]})


def test_timings_are_per_task_even_when_two_tasks_share_a_component():
    def command(task):
        executor_input = {"outputs": {"outputFile": f"/root/run-1/{task}/executor_output.json"}}
        return ["sh", "-ec", "prog", "--executor_input", json.dumps(executor_input), "--function_to_execute", "ranking"]

    assert image_test._task_name(command("ranking")) == "ranking"
    assert image_test._task_name(command("ranking-2")) == "ranking-2"


def test_recommendations_table_must_have_rows(tmp_path):
    import duckdb

    db = tmp_path / "recommendations.duckdb"
    with pytest.raises(AssertionError, match="no recommendations database"):
        image_test.check_recommendations(db)
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE recommendations (user_id VARCHAR, item_id VARCHAR, rank BIGINT)")
    with pytest.raises(AssertionError, match="is empty"):
        image_test.check_recommendations(db)
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO recommendations VALUES ('u1', 'i1', 1), ('u1', 'i2', 2)")
    assert image_test.check_recommendations(db) == 2


def test_each_task_runs_its_command_in_a_fresh_chroot_container(tmp_path, monkeypatch):
    """A stand-in `buildah` on PATH records the calls the handler makes."""
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "bin" / "buildah"
    fake.parent.mkdir()
    fake.write_text(f"""#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
open({str(log)!r}, "a").write(json.dumps(args) + "\\n")
if "from" in args:
    print("ctr-1")
sys.exit(3 if "run" in args and "fail" in args else 0)
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    from kfp.local import status

    root = tmp_path / "work" / "pipeline_root"
    image_test.BuildahTaskHandler.mounts = (str(tmp_path / "work"),)
    command = ["sh", "-ec", "prog", "--executor_input", "{}", "--function_to_execute", "train"]
    handler = image_test.BuildahTaskHandler("localhost/recsys-pipeline:abc", command, str(root), None, {"A": "1"})
    assert handler.run() == status.Status.SUCCESS
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    inspect, create, run, remove = calls
    assert create[:3] == ["--storage-driver", "vfs", "from"] and create[-1] == "localhost/recsys-pipeline:abc"
    work = str((tmp_path / "work").resolve())
    assert run[:5] == ["--storage-driver", "vfs", "run", "--isolation", "chroot"]
    assert run[5:] == ["-v", f"{work}:{work}", "--env", "A=1", "ctr-1", "--", *command], "one mount, the outer folder"
    assert remove[2:] == ["rm", "ctr-1"]
    assert "train" in image_test.BuildahTaskHandler.timings
    failing = image_test.BuildahTaskHandler("localhost/recsys-pipeline:abc", command + ["fail"], str(root), None)
    assert failing.run() == status.Status.FAILURE
    assert json.loads(log.read_text().splitlines()[-1])[2:] == ["rm", "ctr-1"], (
        "the container is removed on failure too"
    )
