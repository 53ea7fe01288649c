"""The KFP shell's parameter handling (tests/pipelines runs the component itself through kfp.local)."""

import pytest

from components.features.pipeline import headline_figures, parse_beam_args


def test_parse_beam_args():
    assert parse_beam_args('["--runner=DataflowRunner", "--region=europe-west4"]') == [
        "--runner=DataflowRunner",
        "--region=europe-west4",
    ]
    assert parse_beam_args("") == []
    with pytest.raises(ValueError, match="JSON list of strings"):
        parse_beam_args('{"runner": "x"}')
    with pytest.raises(ValueError, match="JSON list of strings"):
        parse_beam_args("--runner=DirectRunner")


def test_headline_figures_flatten_the_headline_counts():
    stats = {
        "events_read": 10,
        "events": 9,
        "users": 2,
        "items": 3,
        "categories": 1,
        "steps": 7,
        "examples": {"retrieval": {"train": 3}},
        "dropped_events": {"unknown_item": 1},
        "capped": {"users": 1, "train_targets": 4},
    }
    logged = headline_figures(stats)
    assert logged["examples_retrieval_train"] == 3.0 and logged["dropped_events_unknown_item"] == 1.0
    assert logged["capped_train_targets"] == 4.0
    assert logged["users"] == 2.0 and all(isinstance(v, float) for v in logged.values())


def test_vertex_gcs_mount_paths_become_gs_urls_for_beam():
    from components.features.pipeline import beam_path

    assert beam_path("/gcs/bucket/run/features") == "gs://bucket/run/features"
    assert beam_path("/tmp/run/features") == "/tmp/run/features"


def test_runner_options_pass_through_and_local_defaults_apply_only_without_a_runner():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from components.features.pipeline import pipeline_options

    local = pipeline_options(None)
    assert local.view_as(StandardOptions).runner is None  # run_features pins local_runner()
    assert local.view_as(DirectOptions).direct_num_workers == 2
    assert local.view_as(DirectOptions).direct_running_mode == "multi_processing"
    dataflow = pipeline_options(["--runner=DataflowRunner", "--project=p", "--region=r"])
    assert dataflow.view_as(StandardOptions).runner == "DataflowRunner"
    assert dataflow.get_all_options(drop_default=True) == {"runner": "DataflowRunner", "project": "p", "region": "r"}


def test_check_complete_refuses_counts_that_contradict_the_steps():
    from components.features.pipeline import check_complete

    whole = {"users": 2, "steps": 9, "examples": {"retrieval": {"train": 3, "valid": 2, "test": 2}}}
    check_complete(whole, "leave_last_out")
    lost = {"users": 2, "steps": 9, "examples": {"retrieval": {"train": 2, "valid": 1, "test": 1}}}
    with pytest.raises(RuntimeError, match="incomplete features output"):
        check_complete(lost, "leave_last_out")
