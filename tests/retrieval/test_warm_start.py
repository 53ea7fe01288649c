"""Warm start: a known item keeps its embedding (wherever today's vocabulary puts it), a new one starts from its
features, the towers' weights carry over, and the artifact names its parent."""

import json

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.retrieval import stage, warm_start
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import load_catalogue
from components.retrieval.model import TwoTowerModel
from tests.retrieval.conftest import sequential_shop, write_features

pytestmark = pytest.mark.slow  # four small trainings

# refit_epochs=0: the parent's recorded keys are then exactly its train examples (test_refit.py: a refit adds valid's)
SETTINGS = dict(embedding_dim=16, max_len=6, batch_size=64, epochs=1, patience=1, seed=0, encoder="gru", refit_epochs=0)


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


def test_an_item_the_parent_held_but_never_trained_starts_from_its_features(days):
    """A parent's vocabulary holds items without a train target (a time split's catalogue items, the refit's parent:
    the selected model, whose valid-day launches had none): their rows are the initial noise, never trained."""
    root, _, f2 = days
    parent = warm_start.Parent.load(root / "parent", "v1")
    ids = parent.arrays["ids_item"].tolist()
    untrained = ids.index("i5")
    arrays = dict(parent.arrays, id_known=parent.arrays["id_known"].copy())
    arrays["id_known"][untrained] = False  # as the parent would mark an item without train targets
    assert np.abs(arrays["table_item"][untrained]).sum() > 0
    catalogue = load_catalogue(f2)
    config = RetrievalConfig(**SETTINGS)
    model = TwoTowerModel(catalogue, config)
    warm_start.build(model)
    carried = warm_start.initialise(model, catalogue, config, warm_start.Parent("v1", arrays, parent.config))
    assert carried["carried_items"] == 59 and carried["new_items"] == 2
    table = model.candidate_tower.item_embedding.embeddings.numpy()
    today = catalogue.item_ids.astype(str).tolist()
    np.testing.assert_array_equal(table[today.index("i5")], 0.0)
    np.testing.assert_array_equal(table[today.index("i6")], arrays["table_item"][ids.index("i6")])


def test_warm_started_artifact_names_its_parent_and_refuses_another_architecture(days):
    root, _, f2 = days
    stage.run(f2, root / "child", parent_dir=root / "parent", parent_version="v1", **SETTINGS)
    lineage = json.loads((root / "child" / warm_start.WARM_START).read_text())
    assert lineage["parent_version"] == "v1" and lineage["carried_items"] == 60
    with pytest.raises(warm_start.WarmStartError, match="embedding_dim"):
        stage.run(f2, root / "other", parent_dir=root / "parent", **{**SETTINGS, "embedding_dim": 8})
    assert warm_start.parent_of("") == (None, "")


@pytest.fixture(scope="module")
def next_day(tmp_path_factory):
    """Day 2 is day 1 with one more step per user: its train split holds day 1's train examples plus, per user, the
    example of day 1's valid target (each step's gap distinct, so every example has its own key)."""
    root = tmp_path_factory.mktemp("replay")
    item_category = {i: i // 10 for i in range(60)}
    day1 = [s for s in sequential_shop(120, 6, 10, length=8, seed=3) if len(s) >= 5]
    day2 = [s + [(s[-1] + 1) % 60] for s in day1]
    gaps = [[1_000 * u + t for t in range(len(s))] for u, s in enumerate(day2)]
    f1 = write_features(root / "f1", day1, item_category, max_len=6, gaps=[g[:-1] for g in gaps])
    f2 = write_features(root / "f2", day2, item_category, max_len=6, gaps=gaps)
    stage.run(f1, root / "parent", **SETTINGS)
    return root, f1, f2, day1


def test_a_warm_start_trains_on_the_examples_its_parent_did_not_see_plus_a_replay_share(next_day):
    from components.retrieval import training
    from components.retrieval.data import load_examples

    root, f1, f2, day1 = next_day
    parent = warm_start.Parent.load(root / "parent", "v1")
    catalogue = load_catalogue(f2)
    train = load_examples(f2, "train", 6)
    keys = training.example_keys(f2, train, catalogue)
    assert len(parent.train_keys) == sum(len(s) - 3 for s in day1)  # the parent recorded its train examples
    new, seen = training.replay_split(parent, keys, RetrievalConfig(**SETTINGS, warm_replay=0.5))
    assert len(new) == len(day1) and len(seen) == len(parent.train_keys)
    users = train.user[new] - schema.NUM_RESERVED  # the new examples are the day-1 valid targets, one per user
    assert sorted(catalogue.item_ids[train.target_item[new]].tolist()) == sorted(f"i{day1[u][-2]}" for u in users)
    assert training.replay_split(parent, keys, RetrievalConfig(**SETTINGS, warm_replay=1.0)) is None
    assert training.replay_split(None, keys, RetrievalConfig(**SETTINGS)) is None

    stage.run(f2, root / "child", parent_dir=root / "parent", parent_version="v1", **SETTINGS, warm_replay=0.5)
    lineage = json.loads((root / "child" / warm_start.WARM_START).read_text())
    assert lineage["new_examples"] == len(day1) and lineage["seen_examples"] == len(seen)
    assert lineage["replay"] == 0.5
    child = warm_start.Parent.load(root / "child", "v2")
    assert len(child.train_keys) == len(train)  # tomorrow's parent knows today's examples, new and replayed


def test_an_epoch_holds_every_new_example_and_a_fresh_replay_draw():
    from components.retrieval.training import _epoch_rows

    rng = np.random.default_rng(0)
    split = (np.array([3, 7]), np.arange(100, 140))
    first, second = _epoch_rows(split, 200, 0.25, rng), _epoch_rows(split, 200, 0.25, rng)
    for rows in (first, second):
        assert {3, 7} <= set(rows.tolist()) and len(rows) == 2 + 10 and len(set(rows.tolist())) == len(rows)
        assert set(rows.tolist()) - {3, 7} <= set(range(100, 140))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(_epoch_rows(None, 5, 0.25, rng), np.arange(5))
