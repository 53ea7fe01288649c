"""The KFP shell runs the stage through kfp.local, as the local pipeline does."""
import json

import pytest
from kfp import dsl, local
from kfp.dsl import Dataset

from components import schema
from components.features import reader
from components.features.component import features
from components.features.pipeline import parse_beam_args

from .shop_data import random_shop, write_extract


def test_component_runs_under_kfp_local(tmp_path):
    events, items = random_shop(num_users=12, num_items=10)
    extract = write_extract(tmp_path / "extract", events, items)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def features_only() -> Dataset:
        extracted = dsl.importer(artifact_uri=str(extract), artifact_class=Dataset)
        task = features(extracted=extracted.output, max_len=5, seed=1, ranking_task="next_item",
                        beam_args=json.dumps(["--runner=DirectRunner"]))
        return task.outputs["features"]

    out = features_only().output.path
    stats = json.loads(open(f"{out}/{schema.STATS}").read())
    assert schema.FeatureSpec.read(out).ranking_task == "next_item"
    assert len(reader.load_numpy(out, "retrieval", "test")["target_item"]) == stats["users"] > 0


def test_parse_beam_args():
    assert parse_beam_args('["--runner=DataflowRunner", "--region=europe-west4"]') == [
        "--runner=DataflowRunner", "--region=europe-west4"]
    assert parse_beam_args("") == []
    with pytest.raises(ValueError, match="JSON list of strings"):
        parse_beam_args('{"runner": "x"}')
    with pytest.raises(ValueError, match="JSON list of strings"):
        parse_beam_args("--runner=DirectRunner")
