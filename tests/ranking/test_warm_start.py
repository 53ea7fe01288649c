"""Ranker warm start: a known item keeps its embedding row (wherever today's vocabulary puts it), a new one starts
at zero, the other learned weights carry over while the context statistics stay today's, the artifact names its
parent, and another architecture is refused."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from components import registry, schema
from components.ranking import stage, warm_start
from components.ranking.base import ModelConfig
from components.ranking.training import TrainConfig, _example_features, build_model, training_set

from .synthetic import write_drifting_features

pytestmark = pytest.mark.slow  # three small trainings


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Day 2 is day 1's data on another vocabulary: every item moved (reversed order) and one new id."""
    root = tmp_path_factory.mktemp("ranking-warm")
    f1 = write_drifting_features(root / "f1", users=60, seed=0)
    f2 = root / "f2"
    shutil.copytree(f1, f2)
    vocab = list(reversed(schema.read_vocab(f1, schema.ITEM_VOCAB)))
    vocab[-1] = "item_new"  # item0's row on day 1
    schema.write_vocab(f2, schema.ITEM_VOCAB, vocab)
    items = pd.read_parquet(f2 / schema.ITEM_FEATURES)
    items["item_id"] = vocab
    items.to_parquet(f2 / schema.ITEM_FEATURES)
    stage.run(str(f1), str(root / "parent"), model_type="dien", epochs=1, seed=0)
    return root, f1, f2


def test_known_items_keep_their_rows_and_new_ones_start_at_zero(days):
    root, _, f2 = days
    parent = warm_start.Parent.load(root / "parent", "v1")
    spec = schema.FeatureSpec.read(f2)
    statistics = training_set(str(f2), TrainConfig(), None).statistics
    model = build_model(ModelConfig(model_type="dien"), spec.num_items, spec.num_categories, statistics)
    model(_example_features(), training=False)
    carried = warm_start.initialise(model, f2, parent)
    assert carried == {"parent_version": "v1", "carried_items": spec.num_items - 3, "new_items": 1}

    table = model.embedding.items.embeddings.numpy()
    parent_rows = dict(zip(parent.arrays["ids_item"].tolist(), parent.arrays["table_item"]))
    ids = ["", "[OOV]"] + schema.read_vocab(f2, schema.ITEM_VOCAB)
    parent_ids = parent.arrays["ids_item"].tolist()
    assert any(ids.index(i) != parent_ids.index(i) for i in ids[2:] if i in parent_ids)
    for row, item in enumerate(ids):
        if item != "item_new":
            np.testing.assert_array_equal(table[row], parent_rows[item])
    np.testing.assert_array_equal(table[ids.index("item_new")], 0.0)
    # the head's and the GRU's weights are the parent's; the context statistics are today's
    others = [a for k, a in parent.arrays.items() if k.startswith("other_")]
    learned = [w for w in model.weights if "gru" in w.name or "dense" in w.name]
    assert learned and all(any(np.array_equal(w.numpy(), a) for a in others) for w in learned)
    np.testing.assert_array_equal(model.context.target_counts.numpy(), statistics.target_counts)


def test_warm_started_ranker_names_its_parent_and_refuses_another_architecture(days):
    root, _, f2 = days
    stage.run(str(f2), str(root / "child"), "dien", epochs=1, seed=0, parent_dir=root / "parent", parent_version="v1")
    info = json.loads((root / "child" / "ranker.json").read_text())
    assert info["warm_start"]["parent_version"] == "v1" and info["warm_start"]["new_items"] == 1
    assert (root / "child" / warm_start.WEIGHTS).exists()
    # the child trained on the rows its parent did not (targets of item_new) plus WARM_REPLAY of the others, and
    # records the key of every row it trained on for tomorrow: the train rows', then its refit's valid steps'
    train_set = training_set(str(f2), TrainConfig(), None)
    keys = warm_start.row_keys(f2, train_set.data)
    parent_keys = warm_start.Parent.load(root / "parent").train_keys
    expected = warm_start.warm_rows(keys, parent_keys, warm_start.WARM_REPLAY, seed=0)
    assert 0 < len(expected) < len(keys) and not np.isin(keys, parent_keys).all()
    replay = {k: info["warm_start"][k] for k in ("train_rows", "of_rows", "replay")}
    assert replay == {"train_rows": len(expected), "of_rows": len(keys), "replay": warm_start.WARM_REPLAY}
    valid_keys = warm_start.row_keys(f2, train_set.refit.data)
    np.testing.assert_array_equal(warm_start.Parent.load(root / "child").train_keys, np.concatenate([keys, valid_keys]))
    with pytest.raises(warm_start.WarmStartError, match="model_type"):
        stage.run(str(f2), str(root / "other"), "din", epochs=1, seed=0, parent_dir=root / "parent")


def test_the_registry_parent_is_the_blessed_ranker_of_the_same_type(days, tmp_path):
    root, _, _ = days
    assert warm_start.parent_of("", "dien") == (None, "")
    registry.register(tmp_path, "v1", root / "parent", root / "parent", {})
    registry.promote(tmp_path, "v1")
    assert warm_start.parent_of(tmp_path, "dien") == (str(tmp_path / "blessed" / "v1" / "ranking"), "v1")
    assert warm_start.parent_of(tmp_path, "din") == (None, "")  # the DIN baseline trains from scratch
    # a blessed ranker from before the behaviour features (no behaviour in its configuration) seeds nothing
    info_path = tmp_path / "blessed" / "v1" / "ranking" / "ranker.json"
    info = json.loads(info_path.read_text())
    del info["model_config"]["behaviour"]
    info_path.write_text(json.dumps(info))
    assert warm_start.parent_of(tmp_path, "dien") == (None, "")
