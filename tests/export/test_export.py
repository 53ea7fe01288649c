import datetime as dt
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from components import ab, run_time, schema
from components.export import export, writers
from components.export import stage as export_stage
from components.export.inputs import latest_example_per_user, read_serving_inputs
from components.kfp_metrics import log_metrics

from .conftest import (
    DAY,
    GENERATED_AT,
    ITEMS,
    TARGET_TS,
    TEST_EXAMPLES,
    UNAVAILABLE,
    USER_WITHOUT_HISTORY,
    _example,
    item_index,
)


def params(**overrides) -> export.ExportParams:
    values = dict(
        top_k=3,
        candidates_n=6,
        experiment="exp-ranker",
        treatment_ratio=0.5,
        model_version="v2",
        run_id="run-1",
        generated_at=GENERATED_AT,
        similar_k=3,
    )
    values.update(overrides)
    return export.ExportParams(**values)


def run(tmp_path, features_dir, models, p=None, blessed=False, out="out"):
    return export.run_export(
        features_dir,
        tmp_path / "new",
        tmp_path / "new",
        f"duckdb://{tmp_path / 'recs.duckdb'}",
        tmp_path / out,
        p or params(),
        blessed_retrieval_dir=tmp_path / "blessed" if blessed else None,
        blessed_ranking_dir=tmp_path / "blessed" if blessed else None,
    )


def table(tmp_path, name="recommendations"):
    with duckdb.connect(str(tmp_path / "recs.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetch_arrow_table()


def test_serving_history_is_the_full_latest_one(features_dir):
    inputs = read_serving_inputs(features_dir)
    assert inputs.user_ids.tolist() == ["u1", "u2", "u3", "u4", "u5", USER_WITHOUT_HISTORY]
    u2 = inputs.hist_items[1]
    assert u2.tolist() == [item_index("i05"), item_index("i06"), item_index("i08")]  # target in, oldest out
    assert set(inputs.seen_items[1].tolist()) == {item_index(i) for i in ("i04", "i05", "i06", "i08", "i09")}
    assert inputs.hist_items[5].tolist() == [0, 0, 0]


def test_a_user_with_several_test_examples_is_served_from_the_latest(features_dir):
    """A time split's test window holds one example per step: the list is made once, from the latest."""
    import numpy as np
    import tensorflow as tf

    u2 = list(TEST_EXAMPLES).index("u2") + schema.NUM_RESERVED
    shards = features_dir / schema.RETRIEVAL_DIR
    (shards / "test-00000-of-00001.tfrecord").rename(shards / "test-00000-of-00002.tfrecord")
    with tf.io.TFRecordWriter(str(shards / "test-00001-of-00002.tfrecord")) as writer:  # u2's earlier step
        writer.write(_example(u2, ["i04", "i05"], "i06", [], target_ts=TARGET_TS - DAY))
    stats = json.loads((features_dir / schema.STATS).read_text())
    stats["examples"][schema.RETRIEVAL_DIR]["test"] += 1
    (features_dir / schema.STATS).write_text(json.dumps(stats))
    inputs = read_serving_inputs(features_dir)
    assert inputs.user_ids.tolist() == ["u1", "u2", "u3", "u4", "u5", USER_WITHOUT_HISTORY]
    assert inputs.hist_items[1].tolist() == [item_index("i05"), item_index("i06"), item_index("i08")]
    assert inputs.last_ts[1] == TARGET_TS
    np.testing.assert_array_equal(latest_example_per_user([5, 3, 5, 3, 4], [10, 7, 10, 9, 1]), [2, 3, 4])


def test_export_writes_every_user_with_variants_and_the_artifact(tmp_path, features_dir, models):
    manifest = run(tmp_path, features_dir, models)
    rows = table(tmp_path)
    assert rows.schema.names == schema.RECOMMENDATIONS.names
    artifact = pq.read_table(tmp_path / "out" / export.RECOMMENDATIONS_FILE)
    assert artifact.schema.equals(schema.RECOMMENDATIONS)
    assert artifact.sort_by([(c, "ascending") for c in artifact.column_names]).equals(
        rows.sort_by([(c, "ascending") for c in rows.column_names]).cast(schema.RECOMMENDATIONS)
    )
    users = sorted(set(rows.column("user_id").to_pylist()))
    assert users == ["u1", "u2", "u3", "u4", "u5", USER_WITHOUT_HISTORY] and manifest["users"] == 6
    expected = {u: ab.assign(u, "exp-ranker", 0.5) for u in users}
    for user, variant in zip(rows.column("user_id").to_pylist(), rows.column("variant").to_pylist()):
        assert variant == expected[user]
    assert rows.num_rows == 6 * 3 and manifest["timing"]["users_per_s"] > 0


def test_unavailable_and_seen_items_are_never_recommended(tmp_path, features_dir, models):
    inputs = read_serving_inputs(features_dir)
    run(tmp_path, features_dir, models)
    rows = table(tmp_path).to_pylist()
    assert not {r["item_id"] for r in rows} & UNAVAILABLE
    seen = {u: {ITEMS[i - 2] for i in s if i >= 2} for u, s in zip(inputs.user_ids, inputs.seen_items)}
    assert all(r["item_id"] not in seen[r["user_id"]] for r in rows)
    similar = table(tmp_path, "similar_items").to_pylist()
    assert not {r["similar_item_id"] for r in similar} & UNAVAILABLE
    assert {r["item_id"] for r in similar} == set(ITEMS)  # unavailable items still get replacements
    assert all(r["item_id"] != r["similar_item_id"] for r in similar)


def test_popularity_fallback_for_unknown_and_missing_histories(tmp_path, features_dir, models):
    manifest = run(tmp_path, features_dir, models)
    rows = [r for r in table(tmp_path).to_pylist() if r["user_id"] in ("u5", USER_WITHOUT_HISTORY)]
    assert {r["source"] for r in rows} == {"popularity_fallback"} and manifest["fallback_users"] == 2
    for user in ("u5", USER_WITHOUT_HISTORY):
        ranked = [r["item_id"] for r in sorted(rows, key=lambda r: r["rank"]) if r["user_id"] == user]
        assert ranked == ["i11", "i01", "i06"]  # most trained-on available items (i03, i07 are out of stock)
    others = [r for r in table(tmp_path).to_pylist() if r["user_id"] not in ("u5", USER_WITHOUT_HISTORY)]
    assert {r["source"] for r in others} == {"funnel"}


def test_rerun_is_idempotent(tmp_path, features_dir, models):
    run(tmp_path, features_dir, models)
    first = table(tmp_path), table(tmp_path, "similar_items")
    run(tmp_path, features_dir, models)
    second = table(tmp_path), table(tmp_path, "similar_items")
    assert first[0].equals(second[0]) and first[1].equals(second[1])
    keys = [(r["user_id"], r["rank"]) for r in second[0].to_pylist()]
    assert len(keys) == len(set(keys))


def test_same_day_replaces_only_that_days_partition(tmp_path, features_dir, models):
    yesterday = GENERATED_AT - dt.timedelta(days=1)
    run(tmp_path, features_dir, models, params(generated_at=yesterday, run_id="run-0"))
    run(tmp_path, features_dir, models, params(run_id="run-1"))
    run(tmp_path, features_dir, models, params(run_id="run-2", generated_at=GENERATED_AT + dt.timedelta(hours=5)))
    runs = table(tmp_path).column("run_id").to_pylist()
    assert runs.count("run-0") == runs.count("run-2") == 18 and "run-1" not in runs
    with duckdb.connect(str(tmp_path / "recs.duckdb"), read_only=True) as con:
        latest = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM latest_recommendations").fetchall()}
    assert latest == {"run-2"}


def test_failure_mid_write_leaves_the_previous_tables_intact(tmp_path, features_dir, models, monkeypatch):
    run(tmp_path, features_dir, models)
    before = table(tmp_path), table(tmp_path, "similar_items")
    real_replace = writers._replace_partition

    def fail_on_second_table(con, name, day):
        real_replace(con, name, day)  # the first table's day is already deleted and re-inserted
        if name == "similar_items":
            raise OSError("disk full")

    monkeypatch.setattr(writers, "_replace_partition", fail_on_second_table)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, features_dir, models, params(run_id="run-2", top_k=2))
    after = table(tmp_path), table(tmp_path, "similar_items")
    assert before[0].equals(after[0]) and before[1].equals(after[1])


def test_failure_while_scoring_writes_nothing(tmp_path, features_dir, models, monkeypatch):
    run(tmp_path, features_dir, models)
    before = table(tmp_path)
    monkeypatch.setattr(models["new"].ranker, "score", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path, features_dir, models, params(run_id="run-2"), out="out2")
    assert table(tmp_path).equals(before)
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2.*"))


def test_control_arm_keeps_the_blessed_models_lists(tmp_path, features_dir, models):
    manifest = run(tmp_path, features_dir, models, blessed=True)
    rows = table(tmp_path).to_pylist()
    assert manifest["control_model_version"] == "v1"
    for r in rows:
        assert r["model_version"] == ("v2" if r["variant"] == "treatment" else "v1")
    control = {r["user_id"] for r in rows if r["variant"] == "control"}
    treatment = {r["user_id"] for r in rows if r["variant"] == "treatment"}
    assert control and treatment  # the 50% split of six users lands on both arms
    # i00 is unknown to the blessed model and "gone" is unknown today: neither can be served by it
    assert not {r["item_id"] for r in rows if r["variant"] == "control"} & ({"i00", "gone"} | UNAVAILABLE)
    for model, variant in ((models["blessed"], "control"), (models["new"], "treatment")):
        index = {item: i for i, item in enumerate(model.item_ids)}
        for r in (r for r in rows if r["variant"] == variant and r["source"] == "funnel"):
            assert r["score"] == pytest.approx(model.ranker.item_bias[index[r["item_id"]]])


def test_treatment_ratio_one_serves_everyone_the_new_model(tmp_path, features_dir, models):
    run(tmp_path, features_dir, models, params(treatment_ratio=1.0), blessed=True)
    rows = table(tmp_path).to_pylist()
    assert {r["variant"] for r in rows} == {"treatment"} and {r["model_version"] for r in rows} == {"v2"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"candidates_n": 2}, "at least top_k"),
        ({"run_id": ""}, "non-empty"),
        ({"generated_at": dt.datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_parameters_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        params(**overrides)


def test_run_time_parsing_is_utc():
    assert run_time.parse("2026-11-25T03:00:00Z") == GENERATED_AT
    assert run_time.parse("2026-11-25 04:00:00+01:00") == GENERATED_AT
    assert run_time.parse("2026-11-25T03:00:00") == GENERATED_AT
    assert run_time.parse("2026-11-25T03:00:00.000000123Z") == GENERATED_AT  # RFC 3339 nanoseconds
    with pytest.raises(ValueError, match="run_time 'yesterday'"):
        run_time.parse("yesterday")
    assert abs(run_time.resolve("") - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)


def test_bad_features_output_names_the_problem(features_dir, tmp_path):
    table_ = pq.read_table(Path(features_dir, schema.ITEM_FEATURES)).slice(1)
    pq.write_table(table_, Path(features_dir, schema.ITEM_FEATURES))
    with pytest.raises(schema.SchemaError, match="item_index must run"):
        read_serving_inputs(features_dir)
    with pytest.raises(schema.SchemaError, match="feature_spec.json"):
        read_serving_inputs(tmp_path)


class RecordingMetrics:
    def __init__(self):
        self.logged = {}

    def log_metric(self, name, value):
        assert isinstance(value, float)
        self.logged[name] = value


def test_component_entry_takes_depth_version_and_blessed_model_from_the_evaluation_summary(
    tmp_path, features_dir, models
):
    summary = tmp_path / "summary.json"
    blessed = str(tmp_path / "blessed")
    schema.EvaluationSummary("v2", True, 4, previous_blessed=schema.ModelRef("v1", blessed, blessed)).write(summary)
    metrics = RecordingMetrics()
    figures = export_stage.run(
        str(features_dir),
        str(tmp_path / "new"),
        str(tmp_path / "new"),
        str(tmp_path / "out"),
        destination=f"duckdb://{tmp_path / 'recs.duckdb'}",
        top_k=3,
        candidates_n=0,
        experiment="exp-ranker",
        treatment_ratio=0.5,
        model_version="",
        run_id="run-9",
        run_time="2026-11-25T03:00:00Z",
        evaluation_summary=str(summary),
    )
    log_metrics(metrics.log_metric, figures)
    manifest = json.loads((tmp_path / "out" / export.MANIFEST_FILE).read_text())
    assert manifest["candidates_n"] == 4 and manifest["model_version"] == "v2"
    assert manifest["control_model_version"] == "v1"
    assert metrics.logged["users"] == 6.0 and metrics.logged["candidates_n"] == 4.0
    assert metrics.logged["recommendation_rows"] == table(tmp_path).num_rows
    assert json.loads((tmp_path / "out" / export.MANIFEST_FILE).read_text())["timing"]["total_s"] > 0


def test_unreadable_evaluation_summary_is_named(tmp_path):
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="evaluation summary .*unreadable"):
        schema.EvaluationSummary.read(tmp_path / "summary.json")


def test_export_bench_reports_throughput(features_dir, models, tmp_path):
    from components.export.bench import export_bench

    summary = tmp_path / "summary.json"
    schema.EvaluationSummary("v1", True, 5).write(summary)
    result = export_bench(features_dir, tmp_path / "new", tmp_path / "new", summary, top_k=3)
    assert set(result) == {"export"} and result["export"]["candidates_n"] == 5
    assert result["export"]["users"] == 6 and result["export"]["users_per_s"] > 0
    assert result["export"]["users_per_s_end_to_end"] <= result["export"]["users_per_s"]


def test_on_gcs_fuse_the_artifact_is_moved_in_file_by_file_manifest_last(tmp_path, features_dir, models, monkeypatch):
    from components import atomic

    monkeypatch.setattr(atomic, "on_gcs_fuse", lambda path: True)
    moved, replace = [], atomic.os.replace

    def per_file_replace(source, destination):
        assert not Path(source).is_dir(), "GCS FUSE cannot rename a folder"
        if Path(destination).parent == tmp_path / "out":  # not the renames inside the staging folder
            moved.append(Path(destination).name)
        replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", per_file_replace)
    manifest = run(tmp_path, features_dir, models)
    assert moved[-1] == export.MANIFEST_FILE
    assert sorted(moved) == sorted([export.RECOMMENDATIONS_FILE, export.SIMILAR_ITEMS_FILE, export.MANIFEST_FILE])
    assert json.loads((tmp_path / "out" / export.MANIFEST_FILE).read_text()) == manifest


def export_run(tmp_path, features_dir, destination, **kwargs):
    """The stage's entry, as the DAG calls it (evaluation summary, registry, run time); returns the manifest."""
    export_stage.run(
        str(features_dir),
        str(tmp_path / "new"),
        str(tmp_path / "new"),
        str(tmp_path / "out"),
        destination=destination,
        top_k=3,
        candidates_n=6,
        experiment="exp-ranker",
        treatment_ratio=0.5,
        model_version="v2",
        run_id="run-9",
        **kwargs,
    )
    return json.loads((tmp_path / "out" / export.MANIFEST_FILE).read_text())


def test_case06_registry_moves_only_after_the_lists_are_written(tmp_path, features_dir, models):
    from components import registry

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "model.json").write_text("{}")
    registry_dir = tmp_path / "registry"
    registry.register(registry_dir, "v1", tmp_path / "new", tmp_path / "new", {})
    registry.promote(registry_dir, "v1")
    entry = registry.register(registry_dir, "v2", tmp_path / "new", tmp_path / "new", {})  # as evaluation does
    assert registry.last_blessed(registry_dir).version == "v1"  # registered, not yet the last blessed
    summary = tmp_path / "summary.json"
    registered = schema.ModelRef.from_json(entry.to_json(), "entry")
    schema.EvaluationSummary("v2", True, 0, registered=registered).write(summary)
    not_duckdb = tmp_path / "recs.duckdb"
    not_duckdb.write_text("not a database")
    with pytest.raises(duckdb.Error):
        export_run(
            tmp_path,
            features_dir,
            f"duckdb://{not_duckdb}",
            evaluation_summary=str(summary),
            registry_dir=str(registry_dir),
        )
    assert registry.last_blessed(registry_dir).version == "v1"
    not_duckdb.unlink()
    manifest = export_run(
        tmp_path,
        features_dir,
        f"duckdb://{not_duckdb}",
        evaluation_summary=str(summary),
        registry_dir=str(registry_dir),
    )
    assert registry.last_blessed(registry_dir).version == "v2" == manifest["blessed"]["version"]
    assert table(tmp_path).num_rows == 6 * 3


def test_case07_export_retry_replaces_partition(tmp_path, features_dir, models, spec_inputs):
    destination = f"duckdb://{tmp_path / 'recs.duckdb'}"
    # a run's attempts share its run_time, whatever the clock says when each one exports (here: days later)
    first = export_run(tmp_path, features_dir, destination, run_time="2026-11-25T23:59:00Z")
    retry = export_run(tmp_path, features_dir, destination, run_time="2026-11-25T23:59:00.000Z")
    rows = table(tmp_path)
    assert first["generated_at"] == retry["generated_at"] == "2026-11-25T23:59:00+00:00"
    assert rows.num_rows == 6 * 3 and {t.date() for t in rows.column("generated_at").to_pylist()} == {
        dt.date(2026, 11, 25)
    }
    # The DAG hands export the run's time, the pipeline parameter
    assert spec_inputs["run_time"] == {"componentInputParameter": "pipelinechannel--run_time"}


def test_case07_a_scheduled_runs_retry_after_midnight_replaces_its_partition(
    tmp_path, features_dir, models, spec_inputs, monkeypatch
):
    """A schedule's run has no run_time parameter: the export takes the job's creation time, which Vertex AI and
    KFP resolve the same for every retry of the job, not the clock of the attempt."""
    from kfp import dsl

    from components.export.component import export as export_component

    destination = f"duckdb://{tmp_path / 'recs.duckdb'}"
    created = "2026-11-25T23:59:00.123456789Z"  # RFC 3339 with nanoseconds, as a backend may resolve it

    def attempt(clock: dt.datetime, out: str) -> None:
        monkeypatch.setattr(run_time, "dt", _Clock(clock))
        export_component.python_func(
            features=dsl.Dataset(uri=str(features_dir)),
            retrieval_model=dsl.Model(uri=str(tmp_path / "new")),
            ranking_model=dsl.Model(uri=str(tmp_path / "new")),
            recommendations=dsl.Dataset(uri=str(tmp_path / out)),
            metrics=dsl.Metrics(uri=str(tmp_path / f"{out}-metrics")),
            destination=destination,
            run_id="shop-recommender-20261125",
            top_k=3,
            candidates_n=6,
            run_time="",
            job_create_time=created,
        )

    attempt(dt.datetime(2026, 11, 25, 23, 59, 30, tzinfo=dt.timezone.utc), "first")
    attempt(dt.datetime(2026, 11, 26, 0, 20, tzinfo=dt.timezone.utc), "retry")  # the retry, after midnight
    rows = table(tmp_path)
    assert rows.num_rows == 6 * 3 and {t.date() for t in rows.column("generated_at").to_pylist()} == {
        dt.date(2026, 11, 25)
    }
    # The DAG hands export the job's creation time beside the run_time parameter
    assert spec_inputs["job_create_time"] == {"runtimeValue": {"constant": "{{$.pipeline_job_create_time_utc}}"}}


class _Clock:
    """components.run_time's `dt` with a fixed now (the attempt's clock)."""

    def __init__(self, now: dt.datetime):
        self._now = now
        self.timezone = dt.timezone
        self.timedelta = dt.timedelta

    @property
    def datetime(self):
        now = self._now

        class _DateTime(dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return now

        return _DateTime


def test_case08_failed_export_leaves_no_artifact(tmp_path, features_dir, models):
    not_duckdb = tmp_path / "recs.duckdb"
    not_duckdb.mkdir()
    with pytest.raises(duckdb.Error):
        run(tmp_path, features_dir, models)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.duckdb"]  # no out/, no hidden staging folder


@pytest.fixture(scope="module")
def spec_inputs(tmp_path_factory) -> dict:
    """The export task's parameter inputs in the compiled DAG (inside the blessed condition)."""
    import yaml

    from pipelines.compile import compile_pipeline

    spec = yaml.safe_load(compile_pipeline(tmp_path_factory.mktemp("spec") / "p.yaml").read_text())
    tasks = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    return tasks["export"]["inputs"]["parameters"]
