"""DIN, DIEN and the reference: masking, the once-per-user scoring path, the SavedModel, learning a drift."""

import logging
import re

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.ranking import base, stage, training
from components.ranking.base import ModelConfig
from components.ranking.data import RankingData, load_split, take_rows
from components.ranking.export import export_ranker, load_ranker
from components.ranking.training import TrainConfig, build_model, evaluate, train

NUM_ITEMS, NUM_CATEGORIES = 30, 6


def untrained(model_type: str, **config):
    tf.keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(model_type=model_type, **config), NUM_ITEMS, NUM_CATEGORIES)
    rng = np.random.default_rng(0)
    # A few optimizer-free forward passes in training mode move Dice's moving statistics off their init.
    features = {
        schema.HIST_ITEMS: rng.integers(2, NUM_ITEMS, (8, 4)),
        schema.HIST_CATS: rng.integers(2, 6, (8, 4)),
        schema.NOCLICK_ITEMS: rng.integers(2, NUM_ITEMS, (8, 4)),
        schema.NOCLICK_CATS: rng.integers(2, 6, (8, 4)),
        schema.TARGET_ITEM: rng.integers(2, NUM_ITEMS, 8),
        schema.TARGET_CAT: rng.integers(2, 6, 8),
    }
    model(features, training=True)
    return model


HISTORY = (np.array([[5, 9, 7]]), np.array([[2, 4, 3]]))
CANDIDATES = (np.array([[3, 11, 5, 20]]), np.array([[2, 5, 2, 4]]))


@pytest.mark.parametrize("model_type", ["dien", "din", "reference_gru"])
def test_padding_does_not_change_scores(model_type):
    model = untrained(model_type)
    expected = model.score_indices(*HISTORY, *CANDIDATES).numpy()
    for pad in ((0, 3), (2, 0), (1, 2)):
        padded = [np.pad(h, ((0, 0), pad)) for h in HISTORY]
        np.testing.assert_allclose(model.score_indices(*padded, *CANDIDATES).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("model_type", ["dien", "din"])
def test_scoring_many_candidates_equals_scoring_each_as_the_target(model_type):
    """The re-ranking path (history encoded once, N candidates) computes what training computes per target."""
    model = untrained(model_type)
    scores = model.score_indices(*HISTORY, *CANDIDATES).numpy()[0]
    for n in range(len(CANDIDATES[0])):
        features = {
            schema.HIST_ITEMS: HISTORY[0],
            schema.HIST_CATS: HISTORY[1],
            schema.TARGET_ITEM: CANDIDATES[0][:, n],
            schema.TARGET_CAT: CANDIDATES[1][:, n],
        }
        single = tf.sigmoid(model(features, training=False)).numpy()[0]
        assert single == pytest.approx(scores[n], abs=1e-6)


def test_dien_adds_the_auxiliary_loss_only_in_training():
    model = untrained("dien")
    assert len(model.losses) == 1 and float(model.losses[0]) > 0
    assert untrained("dien", aux_weight=0.0).losses == []


def test_saved_model_round_trip_with_unknown_ids(drifting_features, tmp_path):
    spec = schema.FeatureSpec.read(drifting_features)
    tf.keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(), spec.num_items, spec.num_categories)
    model.score_indices(*HISTORY, *CANDIDATES)
    export_ranker(model, drifting_features, tmp_path / "model", {"note": "test"})
    ranker = load_ranker(tmp_path / "model")
    # item0..item3 are category 0 (index 2), item4 category 1 (index 3); vocab index = position + 2.
    assert ranker.item_category.tolist()[:7] == [0, 1, 2, 2, 2, 2, 3]

    serve = tf.saved_model.load(str(tmp_path / "model" / "saved_model")).signatures["serving_default"]
    served = serve(
        hist_items=tf.constant([["item1", "item4", "no-such-item"], ["", "", "item2"]]),
        hist_cats=tf.constant([["cat0", "cat1", "no-such-cat"], ["", "", "cat0"]]),
        candidate_items=tf.constant([["item5", "unknown"], ["item0", ""]]),
        hist_types=tf.zeros([2, 3], tf.int64),  # unknown, as the Ranker scores a history given by its items
        hist_gaps=tf.fill([2, 3], tf.constant(schema.NO_GAP, tf.int64)),
        request_gap=tf.fill([2], tf.constant(schema.NO_GAP, tf.int64)),
    )["scores"].numpy()
    expected = ranker.score(
        np.array([[3, 6, 1], [0, 0, 4]]),
        np.array([[2, 3, 1], [0, 0, 2]]),
        np.array([[7, 1], [2, 0]]),
        np.array([[3, 1], [2, 0]]),
    )
    np.testing.assert_allclose(served, expected, atol=1e-6)
    np.testing.assert_allclose(
        expected,
        model.score_indices(
            np.array([[3, 6, 1], [0, 0, 4]]),
            np.array([[2, 3, 1], [0, 0, 2]]),
            np.array([[7, 1], [2, 0]]),
            np.array([[3, 1], [2, 0]]),
        ).numpy(),
        atol=1e-6,
    )
    # Out-of-range indices and empty histories are scored as OOV / no history instead of failing.
    assert ranker.score(np.array([[10**6]]), np.array([[-5]]), np.array([[7]]), np.array([[3]])).shape == (1, 1)
    empty = serve(
        hist_items=tf.zeros([1, 0], tf.string),
        hist_cats=tf.zeros([1, 0], tf.string),
        candidate_items=tf.constant([["item5"]]),
        hist_types=tf.zeros([1, 0], tf.int64),
        hist_gaps=tf.zeros([1, 0], tf.int64),
        request_gap=tf.constant([schema.NO_GAP], tf.int64),
    )["scores"].numpy()
    assert empty.shape == (1, 1) and np.isfinite(empty).all()


def test_load_ranker_names_a_wrong_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="ranking model artifact"):
        load_ranker(tmp_path)


def test_dien_beats_din_when_interests_drift(drifting_features, caplog):
    """The next purchase's category follows the latest steps; DIN's order-blind pooling cannot see that.
    Training and scoring print no AutoGraph or retracing warning (each step and forward pass traces once, unconverted)."""
    spec = schema.FeatureSpec.read(drifting_features)
    train_data, test_data = load_split(drifting_features, "train"), load_split(drifting_features, "test")
    auc = {}
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for model_type in ("dien", "din"):
            tf.keras.utils.set_random_seed(0)
            # the recurrence against order-blind pooling: with history_match (the same columns for both) the margin on
            # this data fell to 0.02 (DIEN 0.589, DIN 0.568, seed 0), so the comparison leaves it out
            config = ModelConfig(model_type=model_type, history_match=False)
            model = build_model(config, spec.num_items, spec.num_categories)
            train(model, train_data, TrainConfig(epochs=3, batch_size=64, seed=0))
            auc[model_type] = evaluate(model, test_data)["auc"]
    assert auc["dien"] > auc["din"] + 0.05, auc
    noise = [r.getMessage() for r in caplog.records if re.search(r"AutoGraph|retracing", r.getMessage())]
    assert not noise, noise


def test_training_stops_after_patience_epochs_without_gain_and_keeps_the_best(drifting_features, monkeypatch):
    """Valid AUC falls after epoch 1: with patience 1 the second epoch is the last, and epoch 1's weights stay."""
    spec = schema.FeatureSpec.read(drifting_features)
    train_data, valid_data = load_split(drifting_features, "train"), load_split(drifting_features, "valid")
    falling = iter([0.9, 0.8, 0.7, 0.6])
    monkeypatch.setattr(training.metrics, "auc", lambda labels, scores: next(falling))
    snapshots = []
    original_predict = training.predict
    monkeypatch.setattr(
        training,
        "predict",
        lambda model, *args, **kwargs: (
            snapshots.append(model.get_weights()),
            original_predict(model, *args, **kwargs),
        )[1],
    )
    tf.keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(model_type="din"), spec.num_items, spec.num_categories)
    result = train(model, train_data, TrainConfig(epochs=4, batch_size=64, patience=1), valid_data)
    assert result["epochs_run"] == 2 and result["best_epoch"] == 1
    assert result["valid_auc_by_epoch"] == [0.9, 0.8] and result["valid_auc"] == 0.9
    for kept, first_epoch in zip(model.get_weights(), snapshots[0]):
        np.testing.assert_array_equal(kept, first_epoch)
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=0)


def test_stage_run_rejects_bad_arguments(drifting_features, tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        stage.run(str(drifting_features), str(tmp_path), "sasrec", 1, 0)
    with pytest.raises(ValueError, match="epochs"):
        stage.run(str(drifting_features), str(tmp_path), "dien", 0, 0)


def test_history_match_of_a_hand_made_history():
    """Candidate 5 is steps 1 and 3 (viewed, then carted and faved), 9 step 2 (bought), 4 never; padding on the left."""
    hist_items = tf.constant([[0, 5, 9, 5]], tf.int64)
    view, cart, fav, buy = (1 << k for k in range(4))
    hist_types = tf.constant([[0, view, buy, cart | fav]], tf.int64)
    mask = tf.cast(hist_items > 0, tf.float32)
    features = base.history_match(hist_items, hist_types, mask, tf.constant([[5, 9, 4, 0]], tf.int64)).numpy()[0]
    assert list(base.MATCH_FEATURES) == ["in_history", "log_count", "recency", *(f"as_{k}" for k in schema.EVENT_TYPES)]
    np.testing.assert_allclose(features[0], [1, np.log(3), 1.0, 1, 1, 1, 0], rtol=1e-6)  # latest step: 0.7 ** 0
    np.testing.assert_allclose(features[1], [1, np.log(2), base.MATCH_DECAY, 0, 0, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(features[2], np.zeros(7))
    np.testing.assert_allclose(features[3], np.zeros(7))  # a padding candidate matches no padding step


@pytest.mark.parametrize("model_type", ["dien", "din"])
def test_history_match_is_learned_when_it_alone_carries_the_label(model_type):
    """Bought = the candidate was carted earlier in the history: with history_match the model finds it, without it the
    item embeddings have too few rows per item to."""
    rng = np.random.default_rng(3)
    rows, steps, items = 1536, 6, 400
    hist = rng.integers(2, items, (rows, steps))
    types = np.where(rng.random((rows, steps)) < 0.3, 2, 1)
    pick = rng.integers(0, steps, rows)
    target = np.where(rng.random(rows) < 0.5, hist[np.arange(rows), pick], rng.integers(2, items, rows))
    carted = ((hist == target[:, None]) & (types & 2 > 0)).any(axis=1)
    label = carted.astype(np.float32)
    scalars = {
        schema.USER: np.arange(rows) + 2,
        schema.TARGET_ITEM: target,
        schema.TARGET_CAT: target % 5 + 2,
        schema.TARGET_GAP: np.full(rows, schema.NO_GAP),
        schema.LABEL: label,
    }
    offsets = np.arange(rows + 1) * steps
    sequences = {
        schema.HIST_ITEMS: hist.ravel(),
        schema.HIST_CATS: (hist % 5 + 2).ravel(),
        schema.HIST_TYPES: types.ravel(),
        schema.HIST_GAPS: np.full(rows * steps, schema.NO_GAP),
        schema.NOCLICK_ITEMS: rng.integers(2, items, rows * steps),
        schema.NOCLICK_CATS: rng.integers(2, 7, rows * steps),
    }
    data = RankingData(scalars, {name: (values.astype(np.int64), offsets) for name, values in sequences.items()})
    train_rows, test_rows = np.arange(1024), np.arange(1024, rows)
    aucs = {}
    for history_match in (True, False):
        tf.keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(model_type=model_type, history_match=history_match), items, 7)
        train(model, take_rows(data, train_rows), TrainConfig(epochs=3, batch_size=64))
        aucs[history_match] = evaluate(model, take_rows(data, test_rows))["auc"]
    assert aucs[True] > 0.9 and aucs[False] < 0.7, aucs
