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

import tensorflow as tf

# Let the loop-invariant reads of later steps run ahead of the sequential chain, as Keras' RNN loop does.
LOOP_OPTIONS = {"parallel_iterations": 32}
# Steps per loop iteration. The cell is a few dozen tiny ops on [B, H] tensors, so the loop's own control ops
# (several per loop variable and iteration) cost as much as the cell; two steps per iteration halve them. The time
# axis is padded with gate-0 steps, which leave the state unchanged, to a multiple of this.
UNROLL = 2


def _split_gates(projected: tf.Tensor, units: int) -> list[tf.Tensor]:
    return tf.split(projected, [2 * units, units], axis=-1)


def _pad_steps(tensor: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """Zero steps appended to a time-major tensor so that UNROLL divides its length."""
    padding = [[0, (-steps) % UNROLL]] + [[0, 0]] * (len(tensor.shape) - 1)
    return tf.pad(tensor, padding)


def _chunks(tensor: tf.Tensor) -> tf.TensorArray:
    """A padded time-major tensor [T, ...] as a TensorArray of [UNROLL, ...] chunks."""
    chunked = tf.reshape(tensor, tf.concat([[-1, UNROLL], tf.shape(tensor)[1:]], axis=0))
    return tf.TensorArray(tensor.dtype, size=tf.shape(chunked)[0]).unstack(chunked)


def _unchunk(chunks: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """[T / UNROLL, UNROLL, ...] back to the first `steps` steps [steps, ...]."""
    return tf.reshape(chunks, tf.concat([[-1], tf.shape(chunks)[2:]], axis=0))[:steps]


def _step(state, x, gate, kernel, bias, units, repeats):
    """One cell step: state [B * repeats, H], x [B, 3H] (W x_t + b), gate [B * repeats, 1]."""
    hidden = tf.nn.bias_add(tf.matmul(state, kernel), bias)
    if repeats is not None:
        hidden = tf.reshape(hidden, [-1, repeats, 3 * units])
        x = x[:, None, :]
    x_zr, x_h = _split_gates(x, units)
    hidden_zr, hidden_h = _split_gates(hidden, units)
    update, reset = tf.split(tf.sigmoid(x_zr + hidden_zr), 2, axis=-1)
    candidate = tf.tanh(x_h + reset * hidden_h)
    if repeats is not None:
        update, candidate = tf.reshape(update, [-1, units]), tf.reshape(candidate, [-1, units])
    return state + (gate * update) * (candidate - state)


def _forward(x, gate, kernel, bias, repeats=None, keep_states: bool = True):
    """The recurrence over time-major inputs: x [T, B, 3H], gate [T, B * repeats, 1].

    Returns all states [T, B * repeats, H] (keep_states) or the final state [B * repeats, H].
    `repeats` (a scalar tensor) runs that many states per input row, sharing the row's inputs.
    """
    units = kernel.shape[0]
    steps = tf.shape(gate)[0]
    x_ta, gate_ta = _chunks(_pad_steps(x, steps)), _chunks(_pad_steps(gate, steps))
    iterations = x_ta.size()
    states_ta = tf.TensorArray(x.dtype, size=iterations if keep_states else 0, dynamic_size=not keep_states)

    def body(i, state, states):
        xs, gates = tf.unstack(x_ta.read(i), num=UNROLL), tf.unstack(gate_ta.read(i), num=UNROLL)
        outputs = []
        for k in range(UNROLL):
            state = _step(state, xs[k], gates[k], kernel, bias, units, repeats)
            outputs.append(state)
        return i + 1, state, (states.write(i, tf.stack(outputs)) if keep_states else states)

    initial = tf.zeros([tf.shape(gate)[1], units], x.dtype)
    _, final, states = tf.while_loop(lambda i, *_: i < iterations, body, (0, initial, states_ta), **LOOP_OPTIONS)
    return _unchunk(states.stack(), steps) if keep_states else final


def _backward(d_states, x, gate, kernel, bias, states):
    """Gradients of the recurrence (time-major tensors) for the upstream gradient d_states [T, B, H]."""
    units = kernel.shape[0]
    x_zr, x_h = _split_gates(x, units)
    previous = tf.concat([tf.zeros_like(states[:1]), states[:-1]], axis=0)
    hidden_zr, hidden_h = _split_gates(tf.nn.bias_add(tf.matmul(previous, kernel), bias), units)
    update, reset = tf.split(tf.sigmoid(x_zr + hidden_zr), 2, axis=-1)
    candidate = tf.tanh(x_h + reset * hidden_h)
    gated_update = gate * update
    change = candidate - previous
    d_pre_candidate = gated_update * (1.0 - candidate * candidate)
    # d(loss)/d(pre-activation of [u, r, recurrent h part]) = d(loss)/d(h_t), tiled 3 times, times this:
    coefficients = tf.concat(
        [
            change * gate * update * (1.0 - update),
            d_pre_candidate * hidden_h * reset * (1.0 - reset),
            d_pre_candidate * reset,
        ],
        axis=-1,
    )
    keep = 1.0 - gated_update
    kernel_t = tf.transpose(kernel)

    # One read per iteration: [upstream (H), coefficients (3H), keep (H)] of UNROLL steps. Padded steps come
    # first in this backward loop with zero upstream, so they pass back zero.
    steps = tf.shape(states)[0]
    per_step_ta = _chunks(_pad_steps(tf.concat([d_states, coefficients, keep], axis=-1), steps))
    iterations = per_step_ta.size()
    d_state_ta = tf.TensorArray(states.dtype, size=iterations)

    def body(i, carried, d_states_out):
        chunk = tf.unstack(per_step_ta.read(i), num=UNROLL)
        outputs = [None] * UNROLL
        for k in reversed(range(UNROLL)):
            upstream, coefficient, keep_k = tf.split(chunk[k], [units, 3 * units, units], axis=-1)
            # d_state = d(loss)/d(h_t) in full: the upstream gradient plus what step t + 1 passed back.
            d_state = upstream + carried
            carried = d_state * keep_k + tf.matmul(tf.tile(d_state, [1, 3]) * coefficient, kernel_t)
            outputs[k] = d_state
        return i - 1, carried, d_states_out.write(i, tf.stack(outputs))

    initial = tf.zeros_like(states[0])
    _, _, d_state_ta = tf.while_loop(lambda i, *_: i >= 0, body, (iterations - 1, initial, d_state_ta), **LOOP_OPTIONS)
    d_full = _unchunk(d_state_ta.stack(), steps)
    d_hidden = tf.tile(d_full, [1, 1, 3]) * coefficients
    d_x = tf.concat([d_hidden[..., : 2 * units], d_full * d_pre_candidate], axis=-1)
    d_gate = tf.reduce_sum(d_full * change * update, axis=-1, keepdims=True)
    d_kernel = tf.einsum("tbh,tbk->hk", previous, d_hidden)
    d_bias = tf.reduce_sum(d_hidden, axis=[0, 1])
    return d_x, d_gate, d_kernel, d_bias


@tf.custom_gradient
def _recurrence(x, gate, kernel, bias):
    states = _forward(x, gate, kernel, bias)

    def gradient(d_states):
        return _backward(d_states, x, gate, kernel, bias, states)

    return states, gradient


class GatedGRU(tf.keras.layers.Layer):
    """A GRU whose update gate is scaled per step by `gate` ([B, T] mask or attention weights)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        """Creates the input and recurrent kernels (3 gates of `units`) from the step size of inputs [B, T, D]."""
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
        x = tf.transpose(projected, [1, 0, 2])
        gate = tf.transpose(gate)[..., None]
        kernel, bias = tf.convert_to_tensor(self.recurrent_kernel), tf.convert_to_tensor(self.recurrent_bias)
        if repeats is not None:
            if return_sequences:
                raise ValueError("return_sequences is not supported with repeats")
            return _forward(x, gate, kernel, bias, repeats=repeats, keep_states=False)
        states = _recurrence(x, gate, kernel, bias)
        return tf.transpose(states, [1, 0, 2]) if return_sequences else states[-1]

    def call(self, inputs, gate, return_sequences: bool = True):
        """The states [B, T, units] (or the last [B, units]) of inputs [B, T, D], the update gate scaled by gate [B,
        T]."""
        return self.run(self.project_inputs(inputs), gate, return_sequences=return_sequences)

    def get_config(self):
        """The layer's settings, so Keras can rebuild it."""
        return {**super().get_config(), "units": self.units}
