"""Round trip of the model artifact: SavedModels on raw string ids against the in-memory model."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from components import schema
from components.retrieval import export, training
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import load_catalogue, load_examples
from components.retrieval.index import BruteForce
from components.retrieval.model_io import load_retriever

K = 10


@pytest.fixture(scope="module", params=["shared", "filter"])
def trained(request, shop_features, tmp_path_factory):
    """The shared small model, and one with the filter encoder trained at every position on the full softmax."""
    if request.param == "shared":
        result = request.getfixturevalue("trained_small")
    else:
        config = RetrievalConfig(
            encoder="filter",
            loss="full_softmax",
            every_position=True,
            embedding_dim=32,
            max_len=10,
            batch_size=64,
            epochs=2,
            seed=0,
        )
        result = training.train(
            load_examples(shop_features, "train", 10),
            load_examples(shop_features, "valid", 10),
            load_catalogue(shop_features),
            config,
        )
    model_dir = export.export(
        result.model, result.catalogue, result.config, tmp_path_factory.mktemp("artifact") / "model", k=K
    )
    return result, model_dir


def _requests(catalogue):
    ids = catalogue.item_ids
    cats = np.concatenate([["", "[OOV]"], catalogue.category_ids])
    known = [[ids[5], ids[6], ids[7]], [ids[9], ids[3], ids[4]]]
    known_cats = [[cats[catalogue.item_category[catalogue.item_ids.tolist().index(i)]] for i in row] for row in known]
    return known, known_cats


def test_artifact_layout(trained):
    result, model_dir = trained
    for part in (export.QUERY_ENCODER, export.INDEX, export.ITEM_EMBEDDINGS):
        assert (model_dir / part).exists()
    table = pq.read_table(model_dir / export.ITEM_EMBEDDINGS)
    assert table.column_names == ["item_id", "item_index", "embedding"]
    assert table.column("item_index").to_pylist()[0] == schema.NUM_RESERVED
    written = json.loads((model_dir / "config.json").read_text())
    assert written["embedding_dim"] == 32 and written["encoder"] == result.config.encoder
    assert not any(p.name.startswith(".model.staging-") for p in model_dir.parent.iterdir())


def test_saved_index_matches_the_in_memory_model(trained):
    result, model_dir = trained
    catalogue = result.catalogue
    items, cats = _requests(catalogue)
    served = tf.saved_model.load(str(model_dir / export.INDEX)).signatures["serving_default"](
        hist_items=tf.constant(items), hist_cats=tf.constant(cats)
    )
    index = {item: n for n, item in enumerate(catalogue.item_ids)}
    hist_idx = np.array([[index[i] for i in row] for row in items])
    cat_idx = np.take(catalogue.item_category, hist_idx)
    queries = result.model.encode(hist_idx, cat_idx).numpy()
    expected, expected_scores = BruteForce(result.model.item_embeddings(), catalogue.available).search(
        queries, K, [row for row in hist_idx]
    )
    assert served["item_ids"].shape == (2, K)
    np.testing.assert_array_equal(served["item_ids"].numpy().astype(str), catalogue.item_ids[expected].astype(str))
    np.testing.assert_allclose(served["scores"].numpy(), expected_scores, rtol=1e-4, atol=1e-5)
    for row, history in zip(served["item_ids"].numpy().astype(str), items):
        assert not set(row) & set(history)  # the request's own history items are excluded
        assert all(catalogue.available[index[i]] for i in row)


def test_unknown_ids_and_padding(trained):
    result, model_dir = trained
    encoder = tf.saved_model.load(str(model_dir / export.QUERY_ENCODER)).signatures["serving_default"]
    index = tf.saved_model.load(str(model_dir / export.INDEX)).signatures["serving_default"]
    items, cats = _requests(result.catalogue)
    left = encoder(hist_items=tf.constant([["", "", *items[0]]]), hist_cats=tf.constant([["", "", *cats[0]]]))
    right = encoder(hist_items=tf.constant([[*items[0], "", ""]]), hist_cats=tf.constant([[*cats[0], "", ""]]))
    np.testing.assert_allclose(left["embedding"].numpy(), right["embedding"].numpy(), atol=1e-5)
    with_unknown = encoder(
        hist_items=tf.constant([["no-such-item", *items[0]]]), hist_cats=tf.constant([["no-such-cat", *cats[0]]])
    )
    assert np.isfinite(with_unknown["embedding"].numpy()).all()
    only_unknown = index(
        hist_items=tf.constant([["nope", "nada"], ["", ""]]), hist_cats=tf.constant([["x", ""], ["", ""]])
    )
    assert only_unknown["item_ids"].shape == (2, K)
    assert np.isfinite(only_unknown["scores"].numpy()).all()
    # an unknown id reads as OOV, the same as the OOV index through the Python API
    retriever = load_retriever(model_dir)
    python = retriever.encode(np.array([[schema.OOV_INDEX, schema.OOV_INDEX]]), np.array([[schema.OOV_INDEX, 0]]))
    np.testing.assert_allclose(
        python,
        encoder(hist_items=tf.constant([["nope", "nada"]]), hist_cats=tf.constant([["x", ""]]))["embedding"].numpy(),
        atol=1e-5,
    )


def test_python_api_matches_the_model(trained, shop_features):
    result, model_dir = trained
    retriever = load_retriever(model_dir)
    np.testing.assert_allclose(
        retriever.item_embeddings[schema.NUM_RESERVED :],
        result.model.item_embeddings()[schema.NUM_RESERVED :],
        atol=1e-6,
    )
    assert (retriever.item_embeddings[: schema.NUM_RESERVED] == 0).all()
    test = load_examples(shop_features, "test", 10)
    np.testing.assert_allclose(
        retriever.encode(test.hist_items[:50], test.hist_cats[:50]),
        result.model.encode(test.hist_items[:50], test.hist_cats[:50]).numpy(),
        atol=1e-5,
    )
    top, _ = retriever.top_k(test.hist_items[:5], test.hist_cats[:5], k=K)
    assert top.shape == (5, K) and retriever.available[top].all()


def test_missing_artifact_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="query_encoder"):
        load_retriever(tmp_path)
