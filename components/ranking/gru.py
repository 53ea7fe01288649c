"""The gated GRU behind both DIEN recurrences: the interest extractor (GRU) and interest evolution (AUGRU).

DIEN's AUGRU (Zhou et al., AAAI 2019, eq. 6-7) scales the update gate by the attention weight a_t:
    u_t  = sigmoid(W_u x_t + U_u h_{t-1} + b_u)          r_t = sigmoid(W_r x_t + U_r h_{t-1} + b_r)
    h~_t = tanh(W_h x_t + r_t * (U_h h_{t-1} + b_h))      (reset after the matmul, as Keras' default GRU)
    h_t  = h_{t-1} + (a_t * u_t) * (h~_t - h_{t-1})      ==  (1 - a_t u_t) h_{t-1} + a_t u_t h~_t
A plain GRU over a padded sequence is the same cell with a_t = mask_t: a padded step leaves the state
unchanged, so padding on either side never changes the result. One cell therefore serves both layers.

Speed, without a Python loop over steps: the input projections W x_t of all steps are one matmul before
the loop, and the graph while-loop body holds only the work that must be sequential. The gradient is
written by hand (back-propagation through time) for the same reason: every per-step quantity that does
not depend on the incoming gradient (gate derivatives, h~_t - h_{t-1}, ...) is recomputed for all steps
at once from the saved states, so the backward loop is one [B, 3H] x [3H, H] matmul and a few
element-wise ops per step, and the weight gradients are single matmuls over all steps.
"""
from __future__ import annotations

import components  # noqa: F401  (sets tf-keras before TensorFlow loads)
import tensorflow as tf

# Let the loop-invariant reads of later steps run ahead of the sequential chain, as Keras' RNN loop does.
LOOP_OPTIONS = {"parallel_iterations": 32}


def _split_gates(projected: tf.Tensor, units: int) -> tuple[tf.Tensor, tf.Tensor]:
    return projected[..., : 2 * units], projected[..., 2 * units:]


def _forward(x_zr, x_h, gate, kernel, bias, repeats=None, keep_states: bool = True):
    """The recurrence over time-major inputs: x_zr [T, B, 2H], x_h [T, B, H], gate [T, B * repeats, 1].

    Returns all states [T, B * repeats, H] (keep_states) or the final state [B * repeats, H].
    `repeats` (a scalar tensor) runs that many states per input row, sharing the row's inputs.
    """
    units = kernel.shape[0]
    steps = tf.shape(gate)[0]
    x_zr_ta = tf.TensorArray(x_zr.dtype, size=steps).unstack(x_zr)
    x_h_ta = tf.TensorArray(x_h.dtype, size=steps).unstack(x_h)
    gate_ta = tf.TensorArray(gate.dtype, size=steps).unstack(gate)
    states_ta = tf.TensorArray(x_zr.dtype, size=steps if keep_states else 0, dynamic_size=not keep_states)

    def body(t, state, states):
        hidden = tf.matmul(state, kernel) + bias
        xzr, xh = x_zr_ta.read(t), x_h_ta.read(t)
        if repeats is not None:
            hidden = tf.reshape(hidden, [-1, repeats, 3 * units])
            xzr, xh = xzr[:, None, :], xh[:, None, :]
        hidden_zr, hidden_h = _split_gates(hidden, units)
        zr = tf.sigmoid(xzr + hidden_zr)
        candidate = tf.tanh(xh + zr[..., units:] * hidden_h)
        update = zr[..., :units]
        if repeats is not None:
            update, candidate = tf.reshape(update, [-1, units]), tf.reshape(candidate, [-1, units])
        state = state + gate_ta.read(t) * update * (candidate - state)
        return t + 1, state, (states.write(t, state) if keep_states else states)

    initial = tf.zeros([tf.shape(gate)[1], units], x_zr.dtype)
    _, final, states = tf.while_loop(lambda t, *_: t < steps, body, (0, initial, states_ta), **LOOP_OPTIONS)
    return states.stack() if keep_states else final


def _backward(d_states, x_zr, x_h, gate, kernel, bias, states):
    """Gradients of the recurrence (time-major tensors) for the upstream gradient d_states [T, B, H]."""
    units = kernel.shape[0]
    previous = tf.concat([tf.zeros_like(states[:1]), states[:-1]], axis=0)
    hidden_zr, hidden_h = _split_gates(tf.matmul(previous, kernel) + bias, units)
    zr = tf.sigmoid(x_zr + hidden_zr)
    update, reset = zr[..., :units], zr[..., units:]
    candidate = tf.tanh(x_h + reset * hidden_h)
    gated_update = gate * update
    change = candidate - previous
    d_pre_candidate = gated_update * (1.0 - candidate * candidate)
    # d(loss)/d(pre-activation of [u, r, recurrent h part]) = d(loss)/d(h_t), tiled 3 times, times this:
    coefficients = tf.concat(
        [change * gate * update * (1.0 - update), d_pre_candidate * hidden_h * reset * (1.0 - reset),
         d_pre_candidate * reset], axis=-1)
    keep = 1.0 - gated_update
    kernel_t = tf.transpose(kernel)

    steps = tf.shape(states)[0]
    upstream_ta = tf.TensorArray(states.dtype, size=steps).unstack(d_states)
    coefficients_ta = tf.TensorArray(states.dtype, size=steps).unstack(coefficients)
    keep_ta = tf.TensorArray(states.dtype, size=steps).unstack(keep)
    d_state_ta = tf.TensorArray(states.dtype, size=steps)

    def body(t, carried, d_states_out):
        # d_state = d(loss)/d(h_t) in full: the upstream gradient plus what step t + 1 passed back.
        d_state = upstream_ta.read(t) + carried
        d_hidden = tf.tile(d_state, [1, 3]) * coefficients_ta.read(t)
        carried = d_state * keep_ta.read(t) + tf.matmul(d_hidden, kernel_t)
        return t - 1, carried, d_states_out.write(t, d_state)

    initial = tf.zeros_like(states[0])
    _, _, d_state_ta = tf.while_loop(lambda t, *_: t >= 0, body, (steps - 1, initial, d_state_ta), **LOOP_OPTIONS)
    d_full = d_state_ta.stack()
    d_hidden = tf.tile(d_full, [1, 1, 3]) * coefficients
    d_x_zr = d_hidden[..., : 2 * units]
    d_x_h = d_full * d_pre_candidate
    d_gate = tf.reduce_sum(d_full * change * update, axis=-1, keepdims=True)
    d_kernel = tf.einsum("tbh,tbk->hk", previous, d_hidden)
    d_bias = tf.reduce_sum(d_hidden, axis=[0, 1])
    return d_x_zr, d_x_h, d_gate, d_kernel, d_bias


@tf.custom_gradient
def _recurrence(x_zr, x_h, gate, kernel, bias):
    states = _forward(x_zr, x_h, gate, kernel, bias)

    def gradient(d_states):
        return _backward(d_states, x_zr, x_h, gate, kernel, bias, states)

    return states, gradient


class GatedGRU(tf.keras.layers.Layer):
    """A GRU whose update gate is scaled per step by `gate` ([B, T] mask or attention weights)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(dim, 3 * self.units), initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(self.units, 3 * self.units), initializer="orthogonal"
        )
        self.input_bias = self.add_weight(name="input_bias", shape=(3 * self.units,), initializer="zeros")
        self.recurrent_bias = self.add_weight(name="recurrent_bias", shape=(3 * self.units,), initializer="zeros")
        super().build(input_shape)

    def project_inputs(self, inputs: tf.Tensor) -> tf.Tensor:
        """W x_t + b for every step at once: [B, T, D] -> [B, T, 3H]."""
        return tf.tensordot(inputs, self.kernel, axes=1) + self.input_bias

    def run(self, projected: tf.Tensor, gate: tf.Tensor, repeats=None, return_sequences: bool = False):
        """Runs the recurrence over projected inputs [B, T, 3H] with gate [B * repeats, T].

        `repeats` (inference only) runs that many independent states per input row, one per candidate
        item with rows grouped by user, sharing the user's projected inputs without copying them.
        Returns the final state [B * repeats, H], or all states [B, T, H] (not with `repeats`).
        """
        x_zr, x_h = _split_gates(tf.transpose(projected, [1, 0, 2]), self.units)
        gate = tf.transpose(gate)[..., None]
        kernel, bias = tf.convert_to_tensor(self.recurrent_kernel), tf.convert_to_tensor(self.recurrent_bias)
        if repeats is not None:
            if return_sequences:
                raise ValueError("return_sequences is not supported with repeats")
            return _forward(x_zr, x_h, gate, kernel, bias, repeats=repeats, keep_states=False)
        states = _recurrence(x_zr, x_h, gate, kernel, bias)
        return tf.transpose(states, [1, 0, 2]) if return_sequences else states[-1]

    def call(self, inputs, gate, return_sequences: bool = True):
        return self.run(self.project_inputs(inputs), gate, return_sequences=return_sequences)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
