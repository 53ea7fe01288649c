import dataclasses
import datetime as dt
import json

import pyarrow as pa
import pytest

from components import schema


def _events(**overrides):
    columns = {
        "user_id": ["u1", "u2"],
        "item_id": ["i1", "i2"],
        "event_type": ["view", "purchase"],
        "event_ts": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)] * 2, pa.timestamp("us", tz="UTC")),
        "event_seq": [0, 1],
        "session_id": [None, "s"],
    }
    columns.update(overrides)
    return pa.table(columns)


def test_a_valid_table_is_cast_to_the_contract():
    table = schema.validate_table(_events(event_seq=pa.array([0, 1], pa.int32())), schema.EVENTS, "events")
    assert table.schema == schema.EVENTS


def test_nulls_in_a_required_column_are_named():
    with pytest.raises(schema.SchemaError, match="'user_id' has 1 null"):
        schema.validate_table(_events(user_id=["u1", None]), schema.EVENTS, "events")


def test_missing_columns_and_wrong_types_are_named():
    with pytest.raises(schema.SchemaError, match=r"missing column\(s\) \['event_seq'\]"):
        schema.validate_table(_events().drop(["event_seq"]), schema.EVENTS, "events")
    with pytest.raises(schema.SchemaError, match="types do not match"):
        schema.validate_table(_events(event_seq=["a", "b"]), schema.EVENTS, "events")


def test_a_summary_of_an_unknown_version_is_refused(tmp_path):
    summary = schema.EvaluationSummary("v1", True, 5, details={"gate": {"metric": "ndcg@20"}})
    summary.write(tmp_path / "summary.json")
    assert schema.EvaluationSummary.read(tmp_path / "summary.json") == summary
    (tmp_path / "summary.json").write_text(json.dumps({**summary.to_json(), "summary_version": 2}))
    with pytest.raises(schema.SchemaError, match="summary_version 2, this code reads 1"):
        schema.EvaluationSummary.read(tmp_path / "summary.json")
    (tmp_path / "summary.json").write_text(json.dumps({"export_n": 5}))
    with pytest.raises(schema.SchemaError, match="summary_version None"):
        schema.EvaluationSummary.read(tmp_path / "summary.json")


def test_a_feature_spec_reads_itself_and_refuses_other_versions(tmp_path):
    spec = schema.FeatureSpec(max_len=5, num_items=9, num_categories=4, num_users=6, ranking_task="cvr", split="time")
    spec.write(tmp_path)
    assert schema.FeatureSpec.read(tmp_path) == spec
    written = json.loads((tmp_path / schema.FEATURE_SPEC).read_text())
    assert written["spec_version"] == schema.FEATURE_SPEC_VERSION
    # a features output written before the version field was, or of version 1: examples without event types and
    # gaps, refused with what to do
    for old in ({k: v for k, v in written.items() if k != "spec_version"}, {**written, "spec_version": 1}):
        (tmp_path / schema.FEATURE_SPEC).write_text(json.dumps(old))
        with pytest.raises(schema.SchemaError, match="spec_version 1, this code reads 2 .*re-run the features stage"):
            schema.FeatureSpec.read(tmp_path)
    (tmp_path / schema.FEATURE_SPEC).write_text(json.dumps({**written, "spec_version": 3}))
    with pytest.raises(schema.SchemaError, match=r"spec_version 3, this code reads 2$"):
        schema.FeatureSpec.read(tmp_path)
    (tmp_path / schema.FEATURE_SPEC).write_text(json.dumps({**written, "vocab_size": 3}))
    with pytest.raises(schema.SchemaError, match=r"does not know: \['vocab_size'\]"):
        schema.FeatureSpec.read(tmp_path)
    with pytest.raises(schema.SchemaError, match="no feature_spec.json; is this a features output"):
        schema.FeatureSpec.read(tmp_path / "elsewhere")


def test_the_features_manifest_reads_itself_and_refuses_other_versions(tmp_path):
    examples = {"retrieval": {"train": 7, "valid": 2, "test": 2}, "ranking": {"train": 9, "valid": 3, "test": 3}}
    window = {"cut": "2024-01-03T00:00:00+00:00", "window_days": 1.0}
    manifest = schema.FeaturesManifest(examples, "time", 4, window, details={"events": 40, "users": 2})
    manifest.write(tmp_path)
    assert schema.FeaturesManifest.read(tmp_path) == manifest
    assert manifest.example_count("ranking", "valid") == 3
    with pytest.raises(schema.SchemaError, match="no example count for ranking/dev"):
        manifest.example_count("ranking", "dev")
    # the stats.json of an output written before the version field was
    legacy = {"events": 40, "examples": examples, "split": "leave_last_out", "max_examples_per_user": 0}
    (tmp_path / schema.STATS).write_text(json.dumps(legacy))
    read = schema.FeaturesManifest.read(tmp_path)
    assert (read.split, read.split_window, read.details) == ("leave_last_out", None, {"events": 40})
    assert read.to_json() == {"manifest_version": 1, **legacy}
    (tmp_path / schema.STATS).write_text(json.dumps({**legacy, "manifest_version": 3}))
    with pytest.raises(schema.SchemaError, match="manifest_version 3, this code reads 1"):
        schema.FeaturesManifest.read(tmp_path)
    (tmp_path / schema.STATS).write_text(json.dumps({"events": 40}))
    with pytest.raises(schema.SchemaError, match="lacks the example counts"):
        schema.FeaturesManifest.read(tmp_path)
    with pytest.raises(schema.SchemaError, match="no stats.json; a features output is complete only with it"):
        schema.FeaturesManifest.read(tmp_path / "elsewhere")


def test_a_retrieval_model_config_reads_itself_and_refuses_other_versions(tmp_path):
    config = schema.RetrievalModelConfig({"encoder": "gru", "embedding_dim": 64, "max_len": 20})
    config.write(tmp_path)
    assert schema.RetrievalModelConfig.read(tmp_path) == config
    written = json.loads((tmp_path / schema.RETRIEVAL_CONFIG_FILE).read_text())
    assert written == {"config_version": 1, "encoder": "gru", "embedding_dim": 64, "max_len": 20}  # still flat
    (tmp_path / schema.RETRIEVAL_CONFIG_FILE).write_text(json.dumps(config.config))  # an artifact of older code
    assert schema.RetrievalModelConfig.read(tmp_path) == config
    (tmp_path / schema.RETRIEVAL_CONFIG_FILE).write_text(json.dumps({**written, "config_version": 2}))
    with pytest.raises(schema.SchemaError, match="config_version 2, this code reads 1"):
        schema.RetrievalModelConfig.read(tmp_path)
    (tmp_path / schema.RETRIEVAL_CONFIG_FILE).write_text("{")
    with pytest.raises(schema.SchemaError, match="unreadable"):
        schema.RetrievalModelConfig.read(tmp_path)
    with pytest.raises(schema.SchemaError, match="no config.json; is this a retrieval model artifact"):
        schema.RetrievalModelConfig.read(tmp_path / "elsewhere")


def test_ranker_info_reads_itself_and_refuses_other_versions(tmp_path):
    info = schema.RankerInfo(
        {"model_type": "dien"},
        train_config={"epochs": 2},
        test_metrics={"auc": 0.7, "valid_auc_by_epoch": [0.6, 0.7]},
        details={"ranking_task": "cvr"},
    )
    info.write(tmp_path)
    assert schema.RankerInfo.read(tmp_path) == info
    assert (info.model_type, info.retrieval_weight) == ("dien", 0.0)
    fused = dataclasses.replace(info, fusion={"retrieval_weight": 0.5})
    fused.write(tmp_path)
    assert schema.RankerInfo.read(tmp_path).retrieval_weight == 0.5
    written = json.loads((tmp_path / schema.RANKER_INFO_FILE).read_text())
    assert written["info_version"] == 2 and written["ranking_task"] == "cvr" and written["fusion"] == fused.fusion
    # a ranking artifact of older code (no version, or 1: a SavedModel without the behaviour inputs) still reads
    for old in ({k: v for k, v in written.items() if k != "info_version"}, {**written, "info_version": 1}):
        (tmp_path / schema.RANKER_INFO_FILE).write_text(json.dumps(old))
        assert schema.RankerInfo.read(tmp_path) == dataclasses.replace(fused, info_version=1)
    (tmp_path / schema.RANKER_INFO_FILE).write_text(json.dumps({**written, "info_version": 3}))
    with pytest.raises(schema.SchemaError, match="info_version 3, this code reads 1 and 2"):
        schema.RankerInfo.read(tmp_path)
    (tmp_path / schema.RANKER_INFO_FILE).write_text(json.dumps({"train_config": {}}))
    with pytest.raises(schema.SchemaError, match="lacks the model configuration"):
        schema.RankerInfo.read(tmp_path)
