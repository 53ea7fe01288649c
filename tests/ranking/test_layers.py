"""The layers against hand computations: AUGRU vs NumPy, padding invariance, the auxiliary loss, attention."""

import numpy as np
import pytest
import tensorflow as tf

from components.ranking.attention import TargetAttention
from components.ranking.auxiliary_loss import AuxiliaryLoss
from components.ranking.gru import GatedGRU


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_augru(inputs, attention, layer: GatedGRU):
    """Eq. 6-7 of the DIEN paper step by step: h_t = (1 - a_t u_t) h_{t-1} + a_t u_t h~_t."""
    kernel, recurrent = layer.kernel.numpy(), layer.recurrent_kernel.numpy()
    input_bias, recurrent_bias = layer.input_bias.numpy(), layer.recurrent_bias.numpy()
    units = layer.units
    batch, steps, _ = inputs.shape
    state = np.zeros((batch, units))
    states = []
    for t in range(steps):
        x = inputs[:, t] @ kernel + input_bias
        h = state @ recurrent + recurrent_bias
        update = sigmoid(x[:, :units] + h[:, :units])
        reset = sigmoid(x[:, units : 2 * units] + h[:, units : 2 * units])
        candidate = np.tanh(x[:, 2 * units :] + reset * h[:, 2 * units :])
        gated = attention[:, t : t + 1] * update
        state = (1.0 - gated) * state + gated * candidate
        states.append(state)
    return np.stack(states, axis=1)


@pytest.fixture()
def augru():
    tf.keras.utils.set_random_seed(1)
    layer = GatedGRU(4)
    layer.build((None, None, 3))
    # Non-zero biases so that a wrong bias placement cannot hide.
    layer.input_bias.assign(np.linspace(-0.5, 0.5, 12))
    layer.recurrent_bias.assign(np.linspace(0.3, -0.3, 12))
    return layer


def test_augru_matches_numpy_reference(augru):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(2, 5, 3)).astype(np.float32)
    attention = rng.uniform(size=(2, 5)).astype(np.float32)
    expected = numpy_augru(inputs, attention, augru)
    np.testing.assert_allclose(augru(inputs, attention).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(augru(inputs, attention, return_sequences=False).numpy(), expected[:, -1], atol=1e-5)


@pytest.mark.parametrize("steps", [6, 5, 1])
def test_augru_gradient_matches_automatic_differentiation(augru, steps):
    """The hand-written backward pass against TensorFlow's autodiff of the same forward loop."""
    from components.ranking import gru

    rng = np.random.default_rng(1)
    args = [tf.constant(rng.normal(size=(steps, 3, 12)), tf.float32)]
    args += [
        tf.constant(rng.uniform(size=(steps, 3, 1)), tf.float32),
        tf.constant(augru.recurrent_kernel.numpy()),
        tf.constant(augru.recurrent_bias.numpy()),
    ]
    weights = tf.constant(rng.normal(size=(steps, 3, 4)), tf.float32)

    def gradients(function):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(tf.sin(function(*args)) * weights)
        return tape.gradient(loss, args)

    for manual, automatic in zip(gradients(gru._recurrence), gradients(gru._forward)):
        np.testing.assert_allclose(manual.numpy(), automatic.numpy(), rtol=1e-4, atol=1e-5)


def test_padding_steps_leave_the_state_unchanged(augru):
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(1, 3, 3)).astype(np.float32)
    mask = np.ones((1, 3), np.float32)
    final = augru(inputs, mask, return_sequences=False).numpy()
    for padded_inputs, padded_mask in (
        (np.concatenate([inputs, rng.normal(size=(1, 2, 3))], 1), np.concatenate([mask, np.zeros((1, 2))], 1)),
        (np.concatenate([rng.normal(size=(1, 2, 3)), inputs], 1), np.concatenate([np.zeros((1, 2)), mask], 1)),
    ):
        padded = augru(padded_inputs.astype(np.float32), padded_mask.astype(np.float32), return_sequences=False)
        np.testing.assert_allclose(padded.numpy(), final, atol=1e-6)


def test_auxiliary_loss_on_a_hand_made_case():
    """Dot scorer: -log s(<h_t, e_{t+1}>) - log(1 - s(<h_t, ê_{t+1}>)), averaged over pairs of real steps."""
    states = np.array([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]], np.float32)  # step 2 is padding
    clicked = np.array([[[5.0, 5.0], [1.0, 1.0], [0.0, 3.0]]], np.float32)
    noclick = np.array([[[5.0, 5.0], [0.0, -1.0], [7.0, 7.0]]], np.float32)
    mask = np.array([[1.0, 1.0, 0.0]], np.float32)
    # Only the pair (h_0 -> step 1) is real: <h_0, e_1> = 1, <h_0, ê_1> = 0.
    expected = -np.log(sigmoid(1.0)) - np.log(1.0 - sigmoid(0.0))
    loss = AuxiliaryLoss("dot")((states, clicked, noclick), mask)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # With the last step real as well, the pair (h_1 -> step 2) adds <h_1, e_2> = 6 and <h_1, ê_2> = 14.
    second = -np.log(sigmoid(6.0)) - np.log(1.0 - sigmoid(14.0))
    loss = AuxiliaryLoss("dot")((states, clicked, noclick), np.ones_like(mask))
    assert float(loss) == pytest.approx((expected + second) / 2, rel=1e-5)


def test_auxiliary_loss_mlp_scorer_scores_clicked_and_noclick_items_alike():
    """The loss equals scoring each state against the next step's clicked and no-click items, pair by pair."""
    rng = np.random.default_rng(3)
    states, clicked, noclick = (tf.constant(rng.normal(size=(3, 5, 4)), tf.float32) for _ in range(3))
    mask = tf.constant((rng.random((3, 5)) < 0.8).astype(np.float32))
    layer = AuxiliaryLoss("mlp")
    loss = float(layer((states, clicked, noclick), mask))
    pairs = (mask[:, :-1] * mask[:, 1:]).numpy()
    click = layer.logits(states[:, :-1], clicked[:, 1:]).numpy()
    other = layer.logits(states[:, :-1], noclick[:, 1:]).numpy()
    expected = (-np.log(sigmoid(click)) - np.log(1.0 - sigmoid(other))) * pairs
    assert loss == pytest.approx(expected.sum() / pairs.sum(), rel=1e-5)


def test_attention_ignores_padding_and_normalizes_over_real_steps():
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(2, 3, 4)).astype(np.float32)
    keys = rng.normal(size=(2, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], np.float32)
    for scorer, normalize in (("bilinear", "softmax"), ("mlp", "softmax"), ("mlp", "none")):
        layer = TargetAttention(scorer, normalize=normalize)
        weights = layer((queries, keys), mask).numpy()
        assert weights.shape == (2, 3, 5)
        assert np.all(weights[:, :, :][np.broadcast_to(mask[:, None, :] == 0, weights.shape)] == 0)
        if normalize == "softmax":
            np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
        changed_padding = keys.copy()
        changed_padding[mask == 0] = 100.0
        np.testing.assert_allclose(layer((queries, changed_padding), mask).numpy(), weights, atol=1e-6)
