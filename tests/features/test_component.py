"""The KFP shell's parameter handling (tests/pipelines runs the component itself through kfp.local)."""
import pytest

from components.features.pipeline import log_metrics, parse_beam_args


def test_parse_beam_args():
    assert parse_beam_args('["--runner=DataflowRunner", "--region=europe-west4"]') == [
        "--runner=DataflowRunner", "--region=europe-west4"]
    assert parse_beam_args("") == []
    with pytest.raises(ValueError, match="JSON list of strings"):
        parse_beam_args('{"runner": "x"}')
    with pytest.raises(ValueError, match="JSON list of strings"):
        parse_beam_args("--runner=DirectRunner")


def test_log_metrics_flattens_the_headline_counts():
    stats = {"events_read": 10, "events": 9, "users": 2, "items": 3, "categories": 1, "steps": 7,
             "examples": {"retrieval": {"train": 3}}, "dropped_events": {"unknown_item": 1}}
    logged = {}
    log_metrics(stats, lambda name, value: logged.__setitem__(name, value))
    assert logged["examples_retrieval_train"] == 3.0 and logged["dropped_events_unknown_item"] == 1.0
    assert logged["users"] == 2.0 and all(isinstance(v, float) for v in logged.values())
