"""New items through the SavedModel: a catalogue item without any event, with features, is retrievable; an
unavailable one never is."""

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from components import schema
from components.features.pipeline import run_features
from components.retrieval import export, stage
from components.retrieval.data import load_catalogue
from tests.features.shop_data import events_table, write_extract

DAY = 24 * 60


def _shop(rng):
    """Users stay in one category of five items; i-c0-new has no event, i-c1-0 is no longer available."""
    rows = []
    for user in range(80):
        category = user % 4
        for step in range(8):
            item = f"i-c{category}-{rng.integers(5)}"
            rows.append((f"u{user:03d}", item, "view", step * DAY // 2 + user, step))
    ids = [f"i-c{c}-{k}" for c in range(4) for k in range(5)] + ["i-c0-new"]
    items = pa.table(
        {
            "item_id": ids,
            "category": [i.split("-")[1] for i in ids],
            "brand": [f"b{i.split('-')[1]}" for i in ids],
            "price": [10.0 + 5 * int(i.split("-")[1][1]) for i in ids],
            "title": ids,
            "available": [i != "i-c1-0" for i in ids],
        },
        schema=schema.ITEMS,
    )
    return events_table(rows), items


@pytest.mark.slow
def test_an_item_without_events_is_retrievable_through_its_features(tmp_path):
    events, items = _shop(np.random.default_rng(0))
    extract = write_extract(tmp_path / "extract", events, items)
    features = tmp_path / "features"
    stats = run_features(
        str(extract),
        str(features),
        max_len=5,
        beam_args=["--runner=FnApiRunner"],
        split="time",
        split_cut="2024-01-03T00:00:00",
    )
    assert stats["new_items_in_vocabulary"] == 1
    catalogue = load_catalogue(features)
    new = int(np.flatnonzero(catalogue.item_ids == "i-c0-new")[0])
    assert catalogue.train_count[new] == 0 and catalogue.available[new]
    model_dir = tmp_path / "model"
    stage.run(features, model_dir, epochs=3, embedding_dim=16, batch_size=64, seed=0)

    index = tf.saved_model.load(str(model_dir / export.INDEX)).signatures["serving_default"]
    histories = {c: [f"i-c{c}-{k}" for k in (1, 2, 3)] for c in range(4)}
    hist_items = tf.constant([histories[c] for c in range(4)])
    hist_cats = tf.constant([[f"c{c}"] * 3 for c in range(4)])
    out = index(hist_items=hist_items, hist_cats=hist_cats)
    lists = [[i.decode() for i in row] for row in out["item_ids"].numpy()]
    for row in lists:
        assert "i-c1-0" not in row  # unavailable: never recommended
    assert "i-c0-new" in lists[0]  # retrievable, with a finite score
    assert np.isfinite(out["scores"].numpy()[0][lists[0].index("i-c0-new")])
    # its features put it among its own category's items for a user of that category, not at the bottom
    assert lists[0].index("i-c0-new") < len(lists[0]) // 2, lists[0]


def test_id_dropout_leaves_an_items_id_row_out_in_training_only(shop_features):
    from components.retrieval import warm_start
    from components.retrieval.config import RetrievalConfig
    from components.retrieval.model import TwoTowerModel

    catalogue = load_catalogue(shop_features)
    model = TwoTowerModel(catalogue, RetrievalConfig(embedding_dim=8, max_len=10, id_dropout=0.5, seed=0))
    warm_start.build(model)
    tower = model.candidate_tower
    index = tf.constant(np.repeat(np.arange(schema.NUM_RESERVED, 12), 50), tf.int64)
    features_only = (
        tower.category_embedding(tf.gather(tower.item_category, index))
        + tower.brand_embedding(tf.gather(tower.item_brand, index))
        + tower.price_embedding(tf.gather(tower.item_price_bucket, index))
    ).numpy()
    whole = features_only + tower.item_embedding(index).numpy()
    np.testing.assert_allclose(tower(index, training=False).numpy(), whole, atol=1e-6)
    trained = tower(index, training=True).numpy()
    dropped = np.all(np.isclose(trained, features_only, atol=1e-6), axis=1)
    kept = np.all(np.isclose(trained, whole, atol=1e-6), axis=1)
    assert np.all(dropped ^ kept)  # each row is its features alone or the whole row, never rescaled
    assert 0.35 < dropped.mean() < 0.65
    with pytest.raises(ValueError, match="id_dropout"):
        RetrievalConfig(id_dropout=1.0)
