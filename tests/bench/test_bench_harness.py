"""The bench harness: a real run on the tiny synthetic shop, seeds aggregation, and stage discovery."""

import json
import sys
import types

import pytest

from bench import aggregate, run, stages


def test_tiny_shop_run_writes_the_contract_keys(tmp_path):
    out = tmp_path / "bench.json"
    code = run.main(
        [
            "--data",
            "tiny",
            "--format",
            "synthetic",
            "--out",
            str(out),
            "--stages",
            "warehouse,extract,features,baselines",
        ]
    )
    result = json.loads(out.read_text())
    assert code == 0 and result["failed"] == []
    assert result["events"] > 0 and result["users"] > 0 and result["items"] > 0
    assert set(result["timing"]["stages"]) == {"warehouse", "extract", "features", "baselines"}
    assert result["timing"]["total_s"] >= sum(result["timing"]["stages"].values()) * 0.99
    # each stage ran in a process of its own: the run's peak is the largest stage's, each stage's its own
    assert result["peak_rss_mb"] >= max(result["timing"]["peak_rss_mb"].values()) > 50
    for name in ("popularity", "item_to_item"):
        entry = result["baselines"][name]
        assert {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20, 50)} | {"mrr"} == set(entry)
        assert 0 <= entry["ndcg@20"] <= entry["hit@20"] <= entry["hit@50"] <= 1
    skipped = {s["stage"] for s in result["skipped"]}
    assert {"retrieval", "ranking", "evaluation", "export", "experiments"} <= skipped
    assert "funnel" not in result and "retrieval" not in result  # never guessed


def test_merge_seeds_medians_per_seed_and_spread():
    runs = [{"ranking": {"dien": {"auc": a, "name": "x"}}} for a in (0.70, 0.74, 0.71)]
    merged = aggregate.merge_seeds(runs)["ranking"]["dien"]
    assert merged["auc"] == 0.71 and merged["name"] == "x"
    assert merged["per_seed"] == {"auc": [0.70, 0.74, 0.71]}
    assert merged["spread"]["auc"] == pytest.approx(0.04)
    assert aggregate.merge_seeds(runs[:1]) == runs[0]


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        run.run_bench(str(tmp_path / "missing.csv"), "amazon", 1, tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        run.run_bench("tiny", "synthetic", 0, tmp_path)


@pytest.fixture
def fake_retrieval_stage(monkeypatch):
    calls = []

    def retrieval_bench(features_dir, model_dir, seed, unused_default=3):
        calls.append(seed)
        (tmp := __import__("pathlib").Path(model_dir)).mkdir(parents=True)
        (tmp / "saved").write_text("model")
        return {"hit@20": 0.1 + seed / 100, "train_s": 5.0}

    module = types.ModuleType("components.retrieval.bench")
    module.retrieval_bench = retrieval_bench
    monkeypatch.setitem(sys.modules, "components.retrieval.bench", module)
    return calls


def test_model_stage_discovery_seeds_and_artifacts(tmp_path, fake_retrieval_stage):
    ctx = stages.Context(data="tiny", data_format="synthetic", seeds=3, work=tmp_path, features_dir=tmp_path)
    result = {"timing": {"stages": {}}, "skipped": [], "failed": []}
    run.run_stage(ctx, "retrieval", result, isolated=False)
    assert fake_retrieval_stage == [0, 1, 2]
    assert result["retrieval"]["hit@20"] == pytest.approx(0.11)
    assert result["retrieval"]["per_seed"]["hit@20"] == pytest.approx([0.10, 0.11, 0.12])
    assert sorted(ctx.retrieval_dirs) == [0, 1, 2]
    run.run_stage(ctx, "evaluation", result, isolated=False)  # no ranking model: skipped, not failed
    assert [s["stage"] for s in result["skipped"]] == ["evaluation"] and "funnel" not in result


def test_required_argument_the_bench_cannot_give_skips_the_stage():
    def needs_gpu(features_dir, gpu_id):
        return {"x": 1}

    with pytest.raises(stages.StageSkipped, match="gpu_id"):
        stages.call_with_context(needs_gpu, {"features_dir": "/f"})
    with pytest.raises(stages.StageSkipped, match="returned nothing"):
        stages.call_with_context(lambda features_dir: {}, {"features_dir": "/f"})


def test_crashing_stage_is_reported_and_does_not_stop_the_run(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("disk full")

    monkeypatch.setattr(stages, "run_baselines", broken)
    ctx = stages.Context(data="tiny", data_format="synthetic", seeds=1, work=tmp_path)
    result = {"timing": {"stages": {}}, "skipped": [], "failed": []}
    run.run_stage(ctx, "baselines", result, isolated=False)
    assert result["failed"] == [{"stage": "baselines", "error": "RuntimeError: disk full"}]
    assert "baselines" not in result["timing"]["stages"]


def test_stage_that_runs_all_seeds_itself_gets_each_seeds_retrieval_and_keeps_each_seeds_model(tmp_path, monkeypatch):
    seen = []

    def ranking_bench(features_dir, seeds=(0,), model_dirs=None, retrieval_dirs=None):
        seen.append((seeds, retrieval_dirs))
        for seed in seeds:
            __import__("pathlib").Path(model_dirs[seed]).mkdir(parents=True)
            (__import__("pathlib").Path(model_dirs[seed]) / "saved_model").write_text(f"m{seed}")
        return {"ranking": {"dien": {"auc": 0.7}}}

    module = types.ModuleType("components.ranking.bench")
    module.ranking_bench = ranking_bench
    monkeypatch.setitem(sys.modules, "components.ranking.bench", module)
    ctx = stages.Context(data="tiny", data_format="synthetic", seeds=3, work=tmp_path, features_dir=tmp_path)
    ctx.retrieval_dirs = {s: tmp_path / f"retrieval-seed{s}" for s in range(3)}
    result = {"timing": {"stages": {}}, "skipped": [], "failed": []}
    run.run_stage(ctx, "ranking", result, isolated=False)
    assert seen == [((0, 1, 2), {s: str(tmp_path / f"retrieval-seed{s}") for s in range(3)})]
    assert result["ranking"] == {"dien": {"auc": 0.7}}
    # seed s's evaluation reads seed s's ranker, not the first seed's
    assert {s: (d / "saved_model").read_text() for s, d in ctx.ranking_dirs.items()} == {0: "m0", 1: "m1", 2: "m2"}


def test_seed_an_all_seeds_function_left_without_a_model_is_trained_by_the_stage_entry(tmp_path, monkeypatch):
    def ranking_bench(features_dir, seeds=(0,), model_dir=None):  # knows only the first seed's directory
        __import__("pathlib").Path(model_dir).mkdir(parents=True)
        (__import__("pathlib").Path(model_dir) / "saved_model").write_text("m0")
        return {"ranking": {"dien": {"auc": 0.7}}}

    module = types.ModuleType("components.ranking.bench")
    module.ranking_bench = ranking_bench
    monkeypatch.setitem(sys.modules, "components.ranking.bench", module)
    trained = []

    def train_artifact(stage, ctx, seed, model_dir):
        trained.append(seed)
        model_dir.mkdir(parents=True)
        (model_dir / "saved_model").write_text(f"entry{seed}")

    monkeypatch.setattr(stages, "train_artifact", train_artifact)
    ctx = stages.Context(data="tiny", data_format="synthetic", seeds=3, work=tmp_path, features_dir=tmp_path)
    result = {"timing": {"stages": {}}, "skipped": [], "failed": []}
    run.run_stage(ctx, "ranking", result, isolated=False)
    assert trained == [1, 2]
    assert [(ctx.ranking_dirs[s] / "saved_model").read_text() for s in range(3)] == ["m0", "entry1", "entry2"]


def test_bench_function_without_model_dir_gets_its_artifact_from_the_stage_entry(tmp_path, monkeypatch):
    trained = []
    bench_module = types.ModuleType("components.retrieval.bench")
    bench_module.retrieval_bench = lambda features_dir, seed: {"hit@20": 0.2}
    stage_module = types.ModuleType("components.retrieval.stage")

    def run_entry(features_dir, model_dir, seed):
        trained.append(seed)
        model_dir.mkdir(parents=True)
        (model_dir / "index").write_text("m")
        return {}

    stage_module.run = run_entry
    monkeypatch.setitem(sys.modules, "components.retrieval.bench", bench_module)
    monkeypatch.setitem(sys.modules, "components.retrieval.stage", stage_module)
    ctx = stages.Context(data="tiny", data_format="synthetic", seeds=1, work=tmp_path, features_dir=tmp_path)
    result = {"timing": {"stages": {}}, "skipped": [], "failed": []}
    run.run_stage(ctx, "retrieval", result, isolated=False)
    assert trained == [0] and (ctx.retrieval_dirs[0] / "index").exists()
    assert result["retrieval"] == {"hit@20": 0.2}
    assert "trained again" in ctx.notes[0]


def test_json_is_strict_nan_becomes_null(tmp_path):
    run.write_json(tmp_path / "x.json", {"ranking": {"gauc": float("nan"), "auc": 0.7, "l": [float("inf")]}})
    assert json.loads((tmp_path / "x.json").read_text()) == {"ranking": {"gauc": None, "auc": 0.7, "l": [None]}}


def test_split_option_reaches_the_features_stage_and_needs_time_for_its_cut(tmp_path, monkeypatch):
    called = {}
    module = types.ModuleType("components.features.stage")

    def features_run(extracted, features, seed, split, split_cut, split_window_days):
        called.update(split=split, split_cut=split_cut, split_window_days=split_window_days)
        raise RuntimeError("stop after the call")

    module.run = features_run
    monkeypatch.setitem(sys.modules, "components.features.stage", module)
    ctx = stages.Context(
        data="x",
        data_format="amazon",
        seeds=1,
        work=tmp_path,
        extracted_dir=tmp_path,
        split="time",
        split_cut="2014-07-01T00:00:00+00:00",
        split_window_days=7.0,
    )
    with pytest.raises(RuntimeError, match="stop after the call"):
        stages.run_features(ctx)
    assert called == {"split": "time", "split_cut": "2014-07-01T00:00:00+00:00", "split_window_days": 7.0}
    assert stages.Context(data="x", data_format="amazon", seeds=1, work=tmp_path).feature_split == "leave_last_out"
    with pytest.raises(SystemExit):
        run.main(["--data", "x", "--format", "amazon", "--out", str(tmp_path / "o.json"), "--split-cut", "2014"])


def test_a_presets_parameters_reach_the_stages_under_params_and_are_recorded(tmp_path, monkeypatch):
    """The tiny shop given a preset table of its own: the features' cap and the baselines' user sample come from it,
    --param overrides the sample, the JSON's settings say so; the baselines read the train split as load_numpy does."""
    import numpy as np

    from components import baselines, metrics, schema
    from components.features import reader
    from pipelines import presets

    monkeypatch.setitem(
        presets.PRESET_PARAMETERS,
        "tiny",
        {"max_examples_per_user": (2, "a test's cap"), "evaluation_max_users": (30, "a test's sample")},
    )
    out, work = tmp_path / "bench.json", tmp_path / "work"
    argv = ["--data", "tiny", "--format", "synthetic", "--out", str(out), "--work-dir", str(work)]
    argv += ["--stages", "warehouse,extract,features,baselines", "--param", "evaluation_max_users=40"]
    assert run.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["settings"] == {
        "preset": "tiny",
        "parameters": {"max_examples_per_user": 2, "evaluation_max_users": 40},
        "from_preset": {"max_examples_per_user": 2, "evaluation_max_users": 30},
        "from_params": {"evaluation_max_users": 40},
    }
    features = work / "features"
    stats = schema.FeaturesManifest.read(features)
    assert stats.max_examples_per_user == 2 and result["features"]["stats"]["capped"]["users"] > 0
    # the baselines of 40 hashed test users: the same figures as scoring those users' rows alone
    test = reader.load_numpy(features, schema.RETRIEVAL_DIR, "test")
    ids = schema.indexed_vocab(features, schema.USER_VOCAB)
    rows = metrics.sample_users(ids[test[schema.USER]], 40)
    train = baselines.from_features(features)
    ranks = baselines.evaluate(
        baselines.ItemToItem(train),
        test[schema.HIST_ITEMS][rows],
        test[schema.TARGET_ITEM][rows],
        test[schema.SEEN_ITEMS][rows],
    )
    assert result["baselines"]["item_to_item"] == pytest.approx(metrics.ranking_metrics(ranks))
    # streamed, the train sequences are the ones the whole split in memory gives
    whole = reader.load_numpy(features, schema.RETRIEVAL_DIR, "train")
    expected = baselines.TrainingSequences.from_examples(
        whole[schema.HIST_ITEMS], whole[schema.TARGET_ITEM], train.num_items
    )
    for name in ("previous", "next", "first"):
        np.testing.assert_array_equal(np.sort(getattr(train, name)), np.sort(getattr(expected, name)))
    pairs = sorted(zip(train.previous.tolist(), train.next.tolist()))
    assert pairs == sorted(zip(expected.previous.tolist(), expected.next.tolist()))
    with pytest.raises(SystemExit):  # a parameter no bench stage reads is refused, not recorded as if applied
        run.main(["--data", "tiny", "--format", "synthetic", "--out", str(out), "--param", "gate_on_ope=true"])


def test_an_unknown_ablation_fails_before_any_work_naming_the_known_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.main(["--data", "tiny", "--format", "synthetic", "--out", str(tmp_path / "o.json"), "--ablations", "x"])
    assert "unknown ablation(s) ['x']; known: dien_no_aux" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
