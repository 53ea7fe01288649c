"""The parameters a synthetic preset's shop sets (pipelines/presets.py): pipeline parameters of the right type,
applied under PARAMS by both `make pipeline-run` and `make bench`, every one of them read by a bench stage."""

import pytest

from bench import stages
from components.warehouse.synthetic import PRESETS
from pipelines import presets
from pipelines.run import parameter_types, parse_params


def test_every_preset_parameter_is_a_pipeline_parameter_of_its_type_with_a_reason():
    types = parameter_types()
    for preset, table in presets.PRESET_PARAMETERS.items():
        assert preset in PRESETS
        for name, (value, why) in table.items():
            assert name in types, name
            assert type(value) is types[name], (name, value)
            assert len(why) > 20
            # what PARAMS would give for the same text is the same value
            assert parse_params([f"{name}={str(value).lower() if isinstance(value, bool) else value}"]) == {name: value}


def test_the_bench_applies_every_preset_parameter():
    for table in presets.PRESET_PARAMETERS.values():
        stages.check_parameters(presets.parameters("large") | dict.fromkeys(table))
    with pytest.raises(ValueError, match="gate_on_ope"):
        stages.check_parameters({"gate_on_ope": True})


def test_params_override_the_preset_and_other_sources_get_none():
    large = presets.parameters("large")
    assert large["evaluation_max_users"] > 0 and large["ranking_epochs"] >= 1
    assert presets.with_preset("large", {"ranking_epochs": 2}) == {**large, "ranking_epochs": 2}
    assert presets.with_preset("default", {"top_k": 10}) == {"top_k": 10}
    assert presets.synthetic_preset("synthetic:large") == "large"
    assert presets.synthetic_preset("amazon:/data/x.csv.gz") == ""
    line = presets.describe("large", presets.with_preset("large", {"ranking_epochs": 2}))
    assert "ranking_epochs=2 (given)" in line and f"candidates_n={large['candidates_n']}," in line


def test_stage_settings_map_each_parameter_to_its_entry_keyword():
    parameters = {"retrieval_epochs": 3, "ranking_epochs": 1, "evaluation_max_users": 50, "max_examples_per_user": 4}
    assert stages.stage_settings("retrieval", parameters) == {"epochs": 3, "test_max_users": 50}
    assert stages.stage_settings("campaign", parameters) == {
        "retrieval": {"epochs": 3},
        "ranking_epochs": 1,
        "max_examples_per_user": 4,
    }
    assert stages.stage_settings("evaluation", parameters) == {"max_users": 50}
    assert stages.stage_settings("baselines", parameters) == {"max_users": 50}
    assert stages.stage_settings("features", parameters) == {"max_examples_per_user": 4}
    assert stages.stage_settings("export", parameters) == {}


def test_the_large_campaign_trains_lighter_models_than_the_run_and_other_shops_the_runs_own(tmp_path):
    large = presets.parameters("large")
    context = stages.Context("large", "synthetic", 1, tmp_path, parameters=large)
    campaign = context.settings("campaign")
    assert campaign["retrieval"] == {
        **stages.stage_settings("campaign", large)["retrieval"],
        "epochs": 1,
        "refit_epochs": 0,
    }
    assert campaign["ranking_refit_epochs"] == 0 and campaign["ranking_epochs"] == large["ranking_epochs"]
    assert context.settings("retrieval")["epochs"] == large["retrieval_epochs"]  # the run's own retrieval unchanged
    # a caller's change to its settings never reaches the table (a run without retrieval parameters gets a copy)
    bare = stages.Context("large", "synthetic", 1, tmp_path)
    bare.settings("campaign")["retrieval"]["epochs"] = 99
    assert bare.settings("campaign")["retrieval"] == {"epochs": 1, "refit_epochs": 0}
    medium = stages.Context("medium", "synthetic", 1, tmp_path, parameters={"retrieval_epochs": 2})
    assert medium.settings("campaign") == {"retrieval": {"epochs": 2}}


def test_a_local_run_of_the_large_shop_sets_its_parameters_under_params(tmp_path, monkeypatch):
    """pipelines.run_local on synthetic:large hands the DAG the preset's parameters, PARAMS over them, and returns
    them; another source gets only what was given. The DAG, the warehouse and kfp.local are stand-ins."""
    import contextlib

    from kfp import local

    from components.warehouse import duckdb_warehouse
    from pipelines import pipeline, run, run_output

    calls = []

    def fake_pipeline(**arguments):
        calls.append(arguments)
        (tmp_path / "out" / "pipeline_root" / f"run{len(calls)}").mkdir(parents=True)

    monkeypatch.setattr(pipeline, "recommender_pipeline", fake_pipeline)
    monkeypatch.setattr(duckdb_warehouse, "ensure_warehouse", lambda *args, **kwargs: None)
    monkeypatch.setattr(local, "init", lambda **kwargs: None)
    monkeypatch.setattr(run_output, "console", lambda *args: contextlib.nullcontext())
    monkeypatch.setattr(run_output, "outputs", lambda *args: {"run": "x"})
    result = run.run_local(tmp_path / "out", "synthetic:large", verbose=False, ranking_epochs=2)
    expected = {**presets.parameters("large"), "ranking_epochs": 2}
    assert result["parameters"] == expected
    assert {name: calls[0][name] for name in expected} == expected and calls[0]["shop_preset"] == "large"
    result = run.run_local(tmp_path / "out", "synthetic:default", verbose=False, top_k=10)
    assert result["parameters"] == {"top_k": 10} and "evaluation_max_users" not in calls[1]
