import components  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from components.retrieval.config import ENCODERS, RetrievalConfig
from components.retrieval.data import load_catalogue
from components.retrieval.model import TwoTowerModel


@pytest.fixture(scope="module")
def catalogue(shop_features):
    return load_catalogue(shop_features)


_MODELS = {}


def _model(catalogue, encoder):
    """One model per encoder for the whole module: building and tracing dominate these tests' time."""
    if encoder not in _MODELS:
        _MODELS[encoder] = TwoTowerModel(catalogue, RetrievalConfig(encoder=encoder, embedding_dim=16, max_len=10))
    return _MODELS[encoder]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_query_and_candidate_shapes(catalogue, encoder):
    model = _model(catalogue, encoder)
    hist = np.array([[0, 0, 5, 6], [7, 8, 9, 10]])
    assert model.encode(hist, hist % 5 + 2).shape == (2, 16)
    assert model.candidate_embedding(tf.constant([2, 3, 4], tf.int64)).shape == (3, 16)
    assert model.item_embeddings().shape == (catalogue.num_items, 16)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_padding_does_not_change_the_query(catalogue, encoder):
    model = _model(catalogue, encoder)
    items, cats = np.array([[5, 6, 7]]), np.array([[2, 3, 4]])
    short = model.encode(items, cats).numpy()
    padded = model.encode(np.pad(items, ((0, 0), (6, 0))), np.pad(cats, ((0, 0), (6, 0)))).numpy()
    batched = model.encode(np.array([[0, 0, 0, 0, 5, 6, 7], [9, 8, 7, 6, 5, 4, 3]]),
                           np.array([[0, 0, 0, 0, 2, 3, 4], [2, 2, 2, 2, 2, 2, 2]])).numpy()
    np.testing.assert_allclose(padded, short, atol=1e-5)
    np.testing.assert_allclose(batched[:1], short, atol=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_history_order_and_content_matter(catalogue, encoder):
    model = _model(catalogue, encoder)
    base = model.encode(np.array([[5, 6, 7]]), np.array([[2, 3, 4]])).numpy()
    other = model.encode(np.array([[5, 6, 8]]), np.array([[2, 3, 4]])).numpy()
    assert not np.allclose(base, other, atol=1e-4)
    if encoder != "mean":
        reordered = model.encode(np.array([[7, 6, 5]]), np.array([[4, 3, 2]])).numpy()
        assert not np.allclose(base, reordered, atol=1e-4)


def test_history_longer_than_max_len_reads_the_newest_steps(catalogue):
    model = _model(catalogue, "self_attention")
    newest = np.arange(2, 12)[None]
    longer = np.concatenate([[[40, 41, 42]], newest], axis=1)
    np.testing.assert_allclose(model.encode(longer, longer % 5 + 2).numpy(),
                               model.encode(newest, newest % 5 + 2).numpy(), atol=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_empty_history_still_gets_a_finite_query(catalogue, encoder):
    model = _model(catalogue, encoder)
    query = model.encode(np.zeros((2, 4), np.int64), np.zeros((2, 4), np.int64)).numpy()
    assert np.isfinite(query).all()


def test_towers_share_the_item_table(catalogue):
    model = _model(catalogue, "mean")
    model.encode(np.array([[5]]), np.array([[2]]))
    model.item_embeddings()
    assert model.query_tower.item_embedding is model.candidate_tower.item_embedding
    names = [v.name for v in model.trainable_variables if "item_embedding" in v.name]
    assert len(names) == 1, names


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="encoder"):
        RetrievalConfig(encoder="lstm")
    with pytest.raises(ValueError, match="num_heads"):
        RetrievalConfig(embedding_dim=30, num_heads=4)

