"""The history's behaviour (event types, gaps, the request's gap) in DIN and DIEN: read the same way by both, learned
when it is the only signal, ignored when switched off, and served through the SavedModel; older artifacts load."""

import json

import numpy as np
import pytest
import tensorflow as tf

from components import schema
from components.ranking.base import BEHAVIOUR, ModelConfig
from components.ranking.data import SEQUENCES, RankingData
from components.ranking.export import export_ranker, load_ranker
from components.ranking.training import TrainConfig, build_model, evaluate, train
from components.serving.funnel import Behaviour

from .test_models import CANDIDATES, HISTORY, NUM_CATEGORIES, NUM_ITEMS, untrained

VIEW, CART, PURCHASE = (1 << schema.EVENT_TYPES.index(t) for t in ("view", "cart", "purchase"))
STEPS = {
    schema.HIST_TYPES: np.array([[VIEW, CART | VIEW, PURCHASE]]),
    schema.HIST_GAPS: np.array([[schema.NO_GAP, 60, 86_400]]),
    schema.TARGET_GAP: np.array([3_600]),
}


@pytest.mark.parametrize("model_type", ["dien", "din"])
def test_behaviour_moves_the_scores_and_padding_still_does_not(model_type):
    model = untrained(model_type)
    with_steps = model.score_indices(*HISTORY, *CANDIDATES, STEPS).numpy()
    assert np.abs(with_steps - model.score_indices(*HISTORY, *CANDIDATES).numpy()).max() > 1e-6
    for name, changed in (
        (schema.HIST_TYPES, np.array([[VIEW, VIEW, VIEW]])),
        (schema.HIST_GAPS, np.array([[schema.NO_GAP, 86_400, 60]])),
        (schema.TARGET_GAP, np.array([10**7])),
    ):
        other = model.score_indices(*HISTORY, *CANDIDATES, {**STEPS, name: changed}).numpy()
        assert np.abs(other - with_steps).max() > 1e-6, name  # an untrained model: small but real moves
    for pad in ((0, 2), (3, 0)):
        padded = [np.pad(h, ((0, 0), pad)) for h in HISTORY]
        steps = {
            **STEPS,
            **{name: np.pad(STEPS[name], ((0, 0), pad)) for name in (schema.HIST_TYPES, schema.HIST_GAPS)},
        }
        np.testing.assert_allclose(model.score_indices(*padded, *CANDIDATES, steps).numpy(), with_steps, atol=1e-6)


@pytest.mark.parametrize("model_type", ["dien", "din"])
def test_a_model_without_behaviour_ignores_it(model_type):
    model = untrained(model_type, behaviour=())
    assert model.type_vectors is model.gap_vectors is model.request_vectors is None
    np.testing.assert_array_equal(
        model.score_indices(*HISTORY, *CANDIDATES, STEPS).numpy(), model.score_indices(*HISTORY, *CANDIDATES).numpy()
    )
    with pytest.raises(ValueError, match="unknown behaviour"):
        ModelConfig(behaviour=("dwell_time",))
    assert ModelConfig(behaviour=("request_gap", "event_type")).behaviour == ("event_type", "request_gap")


def _signal_only_in(behaviour: str, rows: int = 1600, seed: int = 0) -> RankingData:
    """Rows whose label is carried by one behaviour feature alone: items and categories are random noise.
    event_type: bought iff the last step was a cart; gap: iff the last step came within a minute of the one
    before; request_gap: iff the request comes within an hour of the last step."""
    rng = np.random.default_rng(seed)
    length = 4
    label = rng.integers(0, 2, rows).astype(np.float32)
    types = rng.choice([VIEW, PURCHASE], (rows, length))
    gaps = rng.integers(2 * 3_600, 30 * 86_400, (rows, length))
    request = rng.integers(2 * 3_600, 30 * 86_400, rows)
    yes = label == 1
    if behaviour == "event_type":
        types[yes, -1] = CART
    elif behaviour == "gap":
        gaps[yes, -1] = rng.integers(1, 60, int(yes.sum()))
    else:
        request[yes] = rng.integers(1, 3_600, int(yes.sum()))
    flat = {
        schema.HIST_ITEMS: rng.integers(2, NUM_ITEMS, (rows, length)),
        schema.HIST_CATS: rng.integers(2, NUM_CATEGORIES, (rows, length)),
        schema.HIST_TYPES: types,
        schema.HIST_GAPS: gaps,
        schema.NOCLICK_ITEMS: rng.integers(2, NUM_ITEMS, (rows, length)),
        schema.NOCLICK_CATS: rng.integers(2, NUM_CATEGORIES, (rows, length)),
    }
    offsets = np.arange(0, rows * length + 1, length, dtype=np.int64)
    sequences = {name: (flat[name].astype(np.int64).ravel(), offsets) for name in SEQUENCES}
    scalars = {
        schema.USER: np.arange(rows, dtype=np.int64) + 2,
        schema.TARGET_ITEM: rng.integers(2, NUM_ITEMS, rows),
        schema.TARGET_CAT: rng.integers(2, NUM_CATEGORIES, rows),
        schema.TARGET_GAP: request.astype(np.int64),
        schema.LABEL: label,
    }
    return RankingData(scalars, sequences)


@pytest.mark.parametrize("model_type", ["dien", "din"])
@pytest.mark.parametrize("behaviour", BEHAVIOUR)
def test_both_models_learn_a_signal_only_the_behaviour_carries(model_type, behaviour):
    train_data, test_data = _signal_only_in(behaviour), _signal_only_in(behaviour, rows=400, seed=1)
    auc = {}
    for reads in ((behaviour,), ()):
        tf.keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(model_type=model_type, behaviour=reads), NUM_ITEMS, NUM_CATEGORIES)
        train(model, train_data, TrainConfig(epochs=4, batch_size=64, seed=0))
        auc[reads] = evaluate(model, test_data)["auc"]
    assert auc[(behaviour,)] > 0.9 and auc[()] < 0.65, auc


def test_saved_model_serves_the_behaviour_as_the_model_scores_it(drifting_features, tmp_path):
    spec = schema.FeatureSpec.read(drifting_features)
    tf.keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(), spec.num_items, spec.num_categories)
    model.score_indices(*HISTORY, *CANDIDATES)
    export_ranker(model, drifting_features, tmp_path / "model", {"note": "test"})
    assert json.loads((tmp_path / "model" / schema.RANKER_INFO_FILE).read_text())["info_version"] == 2
    ranker = load_ranker(tmp_path / "model")
    hist, cats = np.array([[3, 6, 1], [0, 0, 4]]), np.array([[2, 3, 1], [0, 0, 2]])
    cands, cand_cats = np.array([[7, 1], [2, 0]]), np.array([[3, 1], [2, 0]])
    steps = Behaviour(
        types=np.array([[VIEW, CART, PURCHASE], [0, 0, VIEW | CART]]),
        gaps=np.array([[schema.NO_GAP, 60, 86_400], [0, 0, schema.NO_GAP]]),
        request_gap=np.array([3_600, 5]),
    )
    scored = ranker.score(hist, cats, cands, cand_cats, behaviour=steps)
    inputs = {schema.HIST_TYPES: steps.types, schema.HIST_GAPS: steps.gaps, schema.TARGET_GAP: steps.request_gap}
    np.testing.assert_allclose(scored, model.score_indices(hist, cats, cands, cand_cats, inputs).numpy(), atol=1e-6)
    assert np.abs(scored - ranker.score(hist, cats, cands, cand_cats)).max() > 1e-6  # None: unknown behaviour
    serve = tf.saved_model.load(str(tmp_path / "model" / "saved_model")).signatures["serving_default"]
    served = serve(
        hist_items=tf.constant([["item1", "item4", "no-such-item"], ["", "", "item2"]]),
        hist_cats=tf.constant([["cat0", "cat1", "no-such-cat"], ["", "", "cat0"]]),
        candidate_items=tf.constant([["item5", "unknown"], ["item0", ""]]),
        hist_types=tf.constant(steps.types),
        hist_gaps=tf.constant(steps.gaps),
        request_gap=tf.constant(steps.request_gap),
    )["scores"].numpy()
    np.testing.assert_allclose(served, scored, atol=1e-6)
    with pytest.raises(ValueError, match="behaviour of shapes"):
        ranker.score(hist, cats, cands, cand_cats, behaviour=steps.take(np.array([0])))


class _OldModule(tf.Module):
    """A ranking SavedModel as info_version 1 wrote it: score_indices on items and categories only."""

    def __init__(self):
        super().__init__()
        self.item_category = tf.Variable(np.array([0, 1, 2, 2, 3], np.int64), trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)] * 4, autograph=False)
    def score_indices(self, hist_items, hist_cats, candidate_items, candidate_cats):
        share = tf.reduce_mean(tf.cast(hist_items > 1, tf.float32), axis=1, keepdims=True)
        return {"scores": tf.sigmoid(share + tf.cast(candidate_items, tf.float32) / 10)}


def test_an_artifact_written_before_the_behaviour_inputs_still_loads_and_scores(tmp_path):
    module = _OldModule()
    tf.saved_model.save(module, str(tmp_path / "saved_model"), signatures={"score_indices": module.score_indices})
    info = {"model_config": {"model_type": "dien"}, "fusion": {"retrieval_weight": 0.5}}
    (tmp_path / schema.RANKER_INFO_FILE).write_text(json.dumps(info))  # no info_version: version 1
    ranker = load_ranker(tmp_path)
    assert not ranker.reads_behaviour and ranker.retrieval_weight == 0.5
    hist, cands = np.array([[2, 3]]), np.array([[4, 2]])
    steps = Behaviour(np.array([[VIEW, CART]]), np.array([[schema.NO_GAP, 60]]), np.array([5]))
    scores = ranker.score(hist, ranker.item_category[hist], cands, ranker.item_category[cands], behaviour=steps)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-(1 + cands / 10))), atol=1e-6)
