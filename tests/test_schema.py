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
