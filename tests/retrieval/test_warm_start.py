"""Warm start: a known item keeps its embedding (wherever today's vocabulary puts it), a new one starts from its
features, the towers' weights carry over, and the artifact names its parent."""

import json

import numpy as np
import pytest
import tensorflow as tf

from components.retrieval import stage, warm_start
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import load_catalogue
from components.retrieval.model import TwoTowerModel
from tests.retrieval.conftest import sequential_shop, write_features

pytestmark = pytest.mark.slow  # four small trainings

SETTINGS = dict(embedding_dim=16, max_len=6, batch_size=64, epochs=1, patience=1, seed=0, encoder="gru")


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    item_category = {i: i // 10 for i in range(61)}
    day1 = sequential_shop(150, 6, 10, length=8, seed=1)
    day1 = [[i for i in s if i != 60] for s in day1]
    day2 = sequential_shop(150, 6, 10, length=8, seed=2) + [[0, 60, 1, 60, 2, 3]]  # item 60 is new on day 2
    f1 = write_features(root / "f1", day1, item_category, max_len=6)
    f2 = write_features(root / "f2", day2, item_category, max_len=6)
    stage.run(f1, root / "parent", **SETTINGS)
    return root, f1, f2


def test_known_items_keep_their_rows_and_new_ones_start_from_features(days):
    root, f1, f2 = days
    parent = warm_start.Parent.load(root / "parent", "v1")
    catalogue = load_catalogue(f2)
    config = RetrievalConfig(**SETTINGS)
    model = TwoTowerModel(catalogue, config, id_known=(catalogue.train_count > 0) | parent.known(catalogue))
    warm_start.build(model)
    carried = warm_start.initialise(model, catalogue, config, parent)
    assert carried == {"parent_version": "v1", "carried_items": 60, "new_items": 1}

    table = model.candidate_tower.item_embedding.embeddings.numpy()
    parent_rows = dict(zip(parent.arrays["ids_item"].tolist(), parent.arrays["table_item"]))
    ids = catalogue.item_ids.astype(str).tolist()
    parent_ids = parent.arrays["ids_item"].tolist()
    moved = [i for i in ids[2:] if i in parent_ids and ids.index(i) != parent_ids.index(i)]
    assert moved, "the test needs items whose index changed between the days"
    for item in ids[2:]:
        if item != "i60":
            np.testing.assert_array_equal(table[ids.index(item)], parent_rows[item])
    new = ids.index("i60")
    np.testing.assert_array_equal(table[new], 0.0)
    tower = model.candidate_tower
    index = tf.constant([new], tf.int64)
    features_only = (
        tower.category_embedding(tf.gather(tower.item_category, index))
        + tower.brand_embedding(tf.gather(tower.item_brand, index))
        + tower.price_embedding(tf.gather(tower.item_price_bucket, index))
    )
    np.testing.assert_allclose(
        model.candidate_embedding(index).numpy(), tf.math.l2_normalize(features_only, axis=-1).numpy(), atol=1e-6
    )
    # the encoder's weights are the parent's
    gru = [w for w in model.weights if "gru" in w.name]
    assert gru and any(np.array_equal(w.numpy(), a) for w in gru for k, a in parent.arrays.items() if "other" in k)


def test_warm_started_artifact_names_its_parent_and_refuses_another_architecture(days):
    root, _, f2 = days
    stage.run(f2, root / "child", parent_dir=root / "parent", parent_version="v1", **SETTINGS)
    lineage = json.loads((root / "child" / warm_start.WARM_START).read_text())
    assert lineage["parent_version"] == "v1" and lineage["carried_items"] == 60
    with pytest.raises(warm_start.WarmStartError, match="embedding_dim"):
        stage.run(f2, root / "other", parent_dir=root / "parent", **{**SETTINGS, "embedding_dim": 8})
    assert warm_start.parent_of("") == (None, "")
