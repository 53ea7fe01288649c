import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from components.features import reader
from components.retrieval.config import ENCODERS, RetrievalConfig
from components.retrieval.data import Examples, load_catalogue, train_sequences
from components.retrieval.model import TwoTowerModel
from components.retrieval.towers import CausalFilter, RecencyAttention

# every encoder, and the attention ones also with lag biases instead of absolute positions ("+lag")
VARIANTS = [*ENCODERS, "self_attention+lag", "filter+lag"]


@pytest.fixture(scope="module")
def catalogue(shop_features):
    return load_catalogue(shop_features)


_MODELS = {}


def _model(catalogue, variant):
    """One model per variant for the whole module: building and tracing dominate these tests' time."""
    if variant not in _MODELS:
        encoder, _, positions = variant.partition("+")
        config = RetrievalConfig(encoder=encoder, positions=positions or "absolute", embedding_dim=16, max_len=10)
        _MODELS[variant] = TwoTowerModel(catalogue, config)
    return _MODELS[variant]


@pytest.mark.parametrize("encoder", VARIANTS)
def test_query_and_candidate_shapes(catalogue, encoder):
    model = _model(catalogue, encoder)
    hist = np.array([[0, 0, 5, 6], [7, 8, 9, 10]])
    assert model.encode(hist, hist % 5 + 2).shape == (2, 16)
    assert model.candidate_embedding(tf.constant([2, 3, 4], tf.int64)).shape == (3, 16)
    assert model.item_embeddings().shape == (catalogue.num_items, 16)


@pytest.mark.parametrize("encoder", VARIANTS)
def test_padding_does_not_change_the_query(catalogue, encoder):
    model = _model(catalogue, encoder)
    items, cats = np.array([[5, 6, 7]]), np.array([[2, 3, 4]])
    short = model.encode(items, cats).numpy()
    padded = model.encode(np.pad(items, ((0, 0), (6, 0))), np.pad(cats, ((0, 0), (6, 0)))).numpy()
    batched = model.encode(
        np.array([[0, 0, 0, 0, 5, 6, 7], [9, 8, 7, 6, 5, 4, 3]]),
        np.array([[0, 0, 0, 0, 2, 3, 4], [2, 2, 2, 2, 2, 2, 2]]),
    ).numpy()
    np.testing.assert_allclose(padded, short, atol=1e-5)
    np.testing.assert_allclose(batched[:1], short, atol=1e-5)


@pytest.mark.parametrize("encoder", VARIANTS)
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
    np.testing.assert_allclose(
        model.encode(longer, longer % 5 + 2).numpy(), model.encode(newest, newest % 5 + 2).numpy(), atol=1e-5
    )


@pytest.mark.parametrize("encoder", VARIANTS)
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


def test_without_item_features_an_item_is_its_id_row(catalogue):
    """item_features=False: the candidate is the shared id row alone, an item without train targets included."""
    config = RetrievalConfig(encoder="mean", embedding_dim=16, max_len=10, item_features=False, normalize=False)
    model = TwoTowerModel(catalogue, config)
    model.encode(np.array([[5]]), np.array([[2]]))
    items = np.arange(catalogue.num_items)
    np.testing.assert_allclose(model.item_embeddings(), model.candidate_tower.item_embedding(items).numpy())
    with_features = TwoTowerModel(catalogue, dataclasses.replace(config, item_features=True))
    with_features.encode(np.array([[5]]), np.array([[2]]))
    assert not np.allclose(
        with_features.item_embeddings(), with_features.candidate_tower.item_embedding(items).numpy(), atol=1e-4
    )


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="weight_decay"):
        RetrievalConfig(weight_decay=-0.1)
    with pytest.raises(ValueError, match="encoder"):
        RetrievalConfig(encoder="lstm")
    with pytest.raises(ValueError, match="num_heads"):
        RetrievalConfig(embedding_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="positions"):
        RetrievalConfig(positions="relative")


@pytest.mark.parametrize("encoder", VARIANTS)
def test_no_step_sees_its_future(catalogue, encoder):
    """Step t's output is the query of the history that ends at t, whatever comes after it."""
    model = _model(catalogue, encoder)
    items = np.array([[5, 6, 7, 8, 9], [5, 6, 7, 30, 31], [0, 0, 5, 6, 7]])
    cats = items % 5 + 2
    cats[items == 0] = 0
    steps = model.query_tower.sequence((tf.constant(items), tf.constant(cats))).numpy()
    # rows 0 and 1 share their first three steps and differ from the fourth on; row 2 is their prefix, padded
    np.testing.assert_allclose(steps[0, :3], steps[1, :3], atol=1e-5)
    np.testing.assert_allclose(steps[2, 2:], steps[0, :3], atol=1e-5)
    assert not np.allclose(steps[0, 3], steps[1, 3], atol=1e-4)
    for t in range(items.shape[1]):
        prefix = model.query_tower((tf.constant(items[:1, : t + 1]), tf.constant(cats[:1, : t + 1]))).numpy()
        np.testing.assert_allclose(steps[0, t], prefix[0], atol=1e-5)


def test_recency_attention_weighs_steps_by_their_lag():
    """With query and key at zero the logits are the lag biases alone: step t averages the value of steps s <= t
    with weights softmax(bias[t - s]); lags past max_len - 1 take the last bias; masked steps get no weight."""
    dim, max_len = 2, 3
    layer = RecencyAttention(dim, num_heads=1, dropout=0.0, max_len=max_len)
    x = np.array([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]]], np.float32)  # [1, 4, 2]
    mask = np.tril(np.ones((4, 4), bool))[np.newaxis]
    mask[0, :, 1] = False  # step 1 is no key for anyone (as padding would be)
    layer(tf.constant(x), tf.constant(mask))
    for dense in (layer.query, layer.key):
        dense.kernel.assign(np.zeros((dim, dim), np.float32))
    for dense in (layer.value, layer.output_dense):
        dense.kernel.assign(np.eye(dim, dtype=np.float32))
        dense.bias.assign(np.zeros(dim, np.float32))
    bias = np.array([0.0, np.log(2.0), np.log(3.0)], np.float32)  # lag 0, 1, 2 (and 3: clipped to 2)
    layer.lag_bias.assign(bias[np.newaxis])
    out = layer(tf.constant(x), tf.constant(mask)).numpy()[0]
    # step 3 reads steps 0 (lag 3 -> weight 3), 2 (lag 1 -> 2) and 3 (lag 0 -> 1); step 1 is masked
    np.testing.assert_allclose(out[3], (3 * x[0, 0] + 2 * x[0, 2] + 1 * x[0, 3]) / 6, atol=1e-5)
    np.testing.assert_allclose(out[2], (3 * x[0, 0] + 1 * x[0, 2]) / 4, atol=1e-5)
    np.testing.assert_allclose(out[0], x[0, 0], atol=1e-5)


def test_filter_is_a_causal_convolution():
    """The FFT product equals the direct sum over past steps y[t] = sum_k h[k] x[t - k]."""
    layer = CausalFilter(max_len=6)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    layer.build(x.shape)
    taps = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    layer.taps.assign(taps)
    expected = np.zeros_like(x)
    for t in range(5):
        for k in range(t + 1):
            expected[:, t] += taps[k] * x[:, t - k]
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), expected, atol=1e-5)


def test_train_sequences_rebuild_each_user_from_shuffled_prefixes():
    """User 7: steps 10 11 12 13 14 15 16 (train targets 11..16), windows of 4; user 8: steps 20 21."""
    sequence = [10, 11, 12, 13, 14, 15, 16]
    rows = [(7, sequence[max(0, t - 4) : t], sequence[t]) for t in range(1, len(sequence))] + [(8, [20], 21)]
    rows = [rows[i] for i in (3, 6, 0, 5, 2, 1, 4)]  # file order carries no meaning
    examples = Examples(
        hist_items=reader.pad_left([np.array(h) for _, h, _ in rows], 4),
        hist_cats=reader.pad_left([np.array(h) % 3 + 2 for _, h, _ in rows], 4),
        target_item=np.array([t for _, _, t in rows]),
        user=np.array([u for u, _, _ in rows]),
        seen_items=None,
    )
    item_category = np.arange(40) % 3 + 2
    sequences = train_sequences(examples, item_category)
    order = np.argsort([u for u in dict.fromkeys(u for u, _, _ in rows)])
    np.testing.assert_array_equal(sequences.hist_items[order], [[12, 13, 14, 15], [0, 0, 0, 20]])
    np.testing.assert_array_equal(sequences.target_item[order], [[13, 14, 15, 16], [0, 0, 0, 21]])
    np.testing.assert_array_equal(sequences.hist_cats[order], [[2, 3, 4, 2], [0, 0, 0, 4]])
    # no step's input holds its own target or a later one
    for hist, target in zip(sequences.hist_items, sequences.target_item):
        for t in np.flatnonzero(target):
            assert target[t] not in hist[: t + 1]
    assert sequences.num_targets == 5
