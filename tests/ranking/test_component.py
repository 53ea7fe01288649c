"""The KFP shell trains, exports and logs metrics under kfp.local, as the local pipeline runs it."""

import json

from kfp import dsl, local
from kfp.dsl import Dataset

from components.ranking.component import ranking
from components.ranking.export import load_ranker

from .synthetic import write_drifting_features


def test_component_runs_under_kfp_local(tmp_path):
    features_dir = write_drifting_features(tmp_path / "features", users=40, seed=1)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def ranking_only():
        features = dsl.importer(artifact_uri=str(features_dir), artifact_class=Dataset)
        ranking(features=features.output, model_type="din", epochs=2, seed=0)

    task = ranking_only()
    model_dir = next((tmp_path / "root").rglob("saved_model")).parent
    info = json.loads((model_dir / "ranker.json").read_text())
    assert info["model_config"]["model_type"] == "din"
    metrics = info["test_metrics"]
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["best_epoch"] in (1, 2) and metrics["train_examples_per_s"] > 0
    assert load_ranker(model_dir).item_category.shape == (34,)
    assert task is not None
