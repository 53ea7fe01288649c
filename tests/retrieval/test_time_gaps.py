"""The query tower's time (RetrievalConfig.time_gaps): each step's gap bucket and the request gap, in training,
at every position, and through the SavedModel."""

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.features import reader
from components.retrieval import export, training
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import Examples, load_catalogue, load_examples, train_sequences
from components.retrieval.model import TwoTowerModel
from components.retrieval.model_io import load_retriever
from components.retrieval.towers import request_gaps
from components.serving import funnel
from tests.retrieval.conftest import write_features

DAY = 86_400


def test_each_steps_request_is_the_gap_to_the_step_after_it():
    gaps = tf.constant([[-1, -1, 5, 7], [-1, 3, 0, 2]], tf.int64)
    np.testing.assert_array_equal(request_gaps(gaps, tf.constant([9, 4], tf.int64)), [[-1, 5, 7, 9], [3, 0, 2, 4]])


def test_train_sequences_carry_each_steps_gap_and_the_last_targets():
    """User 7: steps 10..15, 10 the first (NO_GAP), step k's gap k seconds; windows of 3 cut the oldest steps."""
    sequence = [10, 11, 12, 13, 14, 15]
    gaps = [schema.NO_GAP, 1, 2, 3, 4, 5]
    rows = [(sequence[max(0, t - 3) : t], gaps[max(0, t - 3) : t], sequence[t], gaps[t]) for t in range(1, 6)]
    rows = [rows[i] for i in (4, 1, 3, 0, 2)]
    examples = Examples(
        hist_items=reader.pad_left([np.array(h) for h, _, _, _ in rows], 3),
        hist_cats=reader.pad_left([np.array(h) % 3 + 2 for h, _, _, _ in rows], 3),
        target_item=np.array([t for _, _, t, _ in rows]),
        user=np.full(len(rows), 7),
        seen_items=None,
        hist_gaps=reader.pad_left([np.array(g) for _, g, _, _ in rows], 3, fill=schema.NO_GAP),
        target_gap=np.array([g for _, _, _, g in rows]),
    )
    sequences = train_sequences(examples, np.arange(20) % 3 + 2)
    np.testing.assert_array_equal(sequences.hist_items, [[12, 13, 14]])
    np.testing.assert_array_equal(sequences.target_item, [[13, 14, 15]])
    np.testing.assert_array_equal(sequences.hist_gaps, [[2, 3, 4]])
    np.testing.assert_array_equal(sequences.target_gap, [5])
    # each step's request (the gap its target came after) is its target's own gap
    requests = request_gaps(tf.constant(sequences.hist_gaps), tf.constant(sequences.target_gap)).numpy()
    np.testing.assert_array_equal(requests, [[3, 4, 5]])


@pytest.fixture(scope="module")
def timed_model(shop_features):
    """An untrained time_gaps model whose gap vectors are random, so that every bucket moves the query."""
    model = TwoTowerModel(load_catalogue(shop_features), RetrievalConfig(embedding_dim=16, max_len=10, time_gaps=True))
    model.encode(np.array([[5]]), np.array([[2]]))
    rng = np.random.default_rng(0)
    for layer in (model.query_tower.gap_embedding, model.query_tower.request_embedding):
        layer.embeddings.assign(rng.normal(size=layer.embeddings.shape).astype(np.float32))
    return model


def _encode(model, items, gaps, request):
    items = np.asarray(items, np.int64)
    cats = np.where(items > 0, items % 5 + 2, 0)
    return model.encode_with_gaps(items, cats, np.asarray(gaps, np.int64), np.asarray(request, np.int64)).numpy()


def test_the_query_reads_the_gaps_and_not_the_padding(timed_model):
    base = _encode(timed_model, [[5, 6, 7]], [[-1, DAY, DAY]], [DAY])
    assert not np.allclose(base, _encode(timed_model, [[5, 6, 7]], [[-1, DAY, DAY]], [60 * DAY]), atol=1e-4)
    assert not np.allclose(base, _encode(timed_model, [[5, 6, 7]], [[-1, 0, DAY]], [DAY]), atol=1e-4)
    padded = _encode(timed_model, [[0, 0, 5, 6, 7], [9, 8, 7, 6, 5]], [[123, 456, -1, DAY, DAY], [1] * 5], [DAY, 3])
    np.testing.assert_allclose(padded[:1], base, atol=1e-5)
    # unknown gaps are NO_GAP: encode (items only) is encode_with_gaps with NO_GAP everywhere
    unknown = _encode(timed_model, [[5, 6, 7]], [[-1, -1, -1]], [-1])
    np.testing.assert_allclose(timed_model.encode(np.array([[5, 6, 7]]), np.array([[2, 3, 4]])).numpy(), unknown)


def test_no_step_sees_its_future_with_gaps(timed_model):
    """Step t reads its steps' items and gaps up to t and the gap of step t + 1 (the time it is asked), nothing
    later: changing step t + 1's item, or any later step, leaves step t as it was."""
    items = np.array([[5, 6, 7, 8], [5, 6, 30, 31]])
    gaps = np.array([[-1, DAY, 2 * DAY, 4 * DAY], [-1, DAY, 2 * DAY, 90 * DAY]])
    cats = items % 5 + 2
    steps = timed_model.query_tower.sequence((items, cats, gaps, np.array([DAY, 7 * DAY]))).numpy()
    np.testing.assert_allclose(steps[0, :2], steps[1, :2], atol=1e-5)
    assert not np.allclose(steps[0, 2], steps[1, 2], atol=1e-4)  # its own item differs
    for t in range(3):
        prefix = timed_model.query_tower((items[:1, : t + 1], cats[:1, : t + 1], gaps[:1, : t + 1], gaps[:1, t + 1]))
        np.testing.assert_allclose(steps[0, t], prefix[0], atol=1e-5)


def test_a_model_without_time_ignores_the_gaps(shop_features):
    model = TwoTowerModel(load_catalogue(shop_features), RetrievalConfig(embedding_dim=16, max_len=10, time_gaps=False))
    items, cats = np.array([[5, 6, 7]]), np.array([[2, 3, 4]])
    with_gaps = model.encode_with_gaps(items, cats, np.array([[-1, 5, 9]]), np.array([DAY])).numpy()
    np.testing.assert_allclose(with_gaps, model.encode(items, cats).numpy())


def _gap_shop(directory):
    """Two groups of 40 items: a step that comes a day after the one before is from the first group, one that
    comes two months after from the second, at random. The request gap alone tells the target's group."""
    rng = np.random.default_rng(3)
    sequences, gaps = [], []
    for _ in range(600):
        long_gap = rng.random(8) < 0.5
        sequences.append([int(40 * g + rng.integers(40)) for g in long_gap])
        gaps.append([schema.NO_GAP] + [60 * DAY if g else DAY for g in long_gap[1:]])
    return write_features(directory, sequences, {i: i // 10 for i in range(80)}, max_len=6, gaps=gaps)


@pytest.fixture(scope="module")
def gap_shop(tmp_path_factory):
    return _gap_shop(tmp_path_factory.mktemp("gap_shop"))


def _group_share(model, features, valid):
    """The share of each valid query's top 10 in its target's group."""
    catalogue = load_catalogue(features)
    group = np.array([int(i[1:]) // 40 if i.startswith("i") else -1 for i in catalogue.item_ids])
    queries = training.encode_queries(model, valid.hist_items, valid.hist_cats, valid.gaps())
    scores = queries @ model.item_embeddings().T
    scores[:, : schema.NUM_RESERVED] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    return float((group[top] == group[valid.target_item][:, None]).mean())


@pytest.mark.parametrize("every_position", [False, True])
def test_the_request_gap_is_learned_where_it_alone_tells_the_target(gap_shop, every_position):
    catalogue = load_catalogue(gap_shop)
    train, valid = load_examples(gap_shop, "train", 6), load_examples(gap_shop, "valid", 6)
    shares = {}
    for time_gaps in (False, True):
        config = RetrievalConfig(
            embedding_dim=16,
            max_len=6,
            batch_size=64 if every_position else 256,
            epochs=6,
            patience=6,
            learning_rate=1e-2,
            every_position=every_position,
            loss="full_softmax" if every_position else "in_batch",
            time_gaps=time_gaps,
        )
        shares[time_gaps] = _group_share(training.train(train, valid, catalogue, config).model, gap_shop, valid)
    assert shares[True] > 0.9, shares
    assert shares[False] < 0.7, shares


def test_saved_model_round_trip_with_gaps(timed_model, shop_features, tmp_path):
    catalogue = load_catalogue(shop_features)
    model_dir = export.export(timed_model, catalogue, timed_model.config, tmp_path / "model", k=10)
    retriever = load_retriever(model_dir)
    assert retriever.reads_gaps
    items = np.array([[0, 5, 6, 7], [9, 8, 7, 6]])
    cats = funnel.history_categories(catalogue.item_category, items)
    gaps = np.array([[-1, -1, DAY, 3 * DAY], [-1, 0, 40, DAY]])
    request = np.array([DAY, 30 * DAY])
    behaviour = funnel.Behaviour(np.zeros_like(items), gaps, request)
    expected = timed_model.encode_with_gaps(items, cats, gaps, request).numpy()
    np.testing.assert_allclose(retriever.encode(items, cats, behaviour=behaviour), expected, atol=1e-5)
    # without a behaviour the artifact reads NO_GAP, as the in-memory model does
    np.testing.assert_allclose(retriever.encode(items, cats), timed_model.encode(items, cats).numpy(), atol=1e-5)
    # the raw-id signature: padding on the right, an unknown id read as OOV
    encoder = tf.saved_model.load(str(model_dir / export.QUERY_ENCODER))
    ids = catalogue.item_ids.astype(str)
    cat_names = np.concatenate([["", "[OOV]"], catalogue.category_ids])
    raw_items = [[ids[5], ids[6], ids[7], ""], [ids[9], ids[8], ids[7], ids[6]]]
    raw_cats = [[cat_names[c] for c in catalogue.item_category[[5, 6, 7]]] + [""], list(cat_names[cats[1]])]
    served = encoder.signatures["serve_with_gaps"](
        hist_items=tf.constant(raw_items),
        hist_cats=tf.constant(raw_cats),
        hist_gaps=tf.constant([[-1, DAY, 3 * DAY, 77], gaps[1].tolist()], tf.int64),
        request_gap=tf.constant(request, tf.int64),
    )["embedding"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    unknown = encoder.signatures["serve_with_gaps"](
        hist_items=tf.constant([["no-such-item"]]),
        hist_cats=tf.constant([["no-such-category"]]),
        hist_gaps=tf.constant([[DAY]], tf.int64),
        request_gap=tf.constant([DAY], tf.int64),
    )["embedding"].numpy()
    assert np.isfinite(unknown).all()
    # the funnel hands the behaviour to a retriever that reads time
    allowed = funnel.allowed_items(retriever.num_items)
    scores = funnel.retrieval_scores(retriever, items, cats, None, allowed, behaviour=behaviour)
    wanted = expected @ retriever.item_embeddings.T
    wanted[:, : schema.NUM_RESERVED] = -np.inf
    np.put_along_axis(wanted, items, -np.inf, axis=1)  # the history's items are masked
    np.testing.assert_allclose(scores, wanted, rtol=1e-4, atol=1e-4)
