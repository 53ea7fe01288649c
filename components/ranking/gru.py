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
at once from the saved states, so the backward loop is one multiply and one [B, 4H] x [4H, H] matmul per
step, and the weight gradients are single 2-D matmuls over all steps. At B = 128 and H = 36 the step's
small matmuls, not the number of ops, set the pace: unrolling steps per loop iteration gained nothing.
"""

from __future__ import annotations

import tensorflow as tf

# Let the loop-invariant reads of later steps run ahead of the sequential chain, as Keras' RNN loop does.
LOOP_OPTIONS = {"parallel_iterations": 32}


def _split_gates(projected: tf.Tensor, units: int) -> list[tf.Tensor]:
    return tf.split(projected, [2 * units, units], axis=-1)


def _steps(tensor: tf.Tensor) -> tf.TensorArray:
    """A time-major tensor [T, ...] as a TensorArray of its steps: a read in the loop is a reference, not a copy."""
    return tf.TensorArray(tensor.dtype, size=tf.shape(tensor)[0]).unstack(tensor)


def _flat(tensor: tf.Tensor) -> tf.Tensor:
    """[T, B, K] as [T * B, K]: matmuls over all steps as one 2-D matmul (a 3-D one is a slower batched matmul)."""
    return tf.reshape(tensor, [-1, tensor.shape[-1]])


def _step(state, x_zr, x_h, gate, kernel, bias, units, repeats):
    """One cell step: state [B * repeats, H], x_zr [B, 2H] (W x_t + b, plus the recurrent bias of u and r), x_h [B, H]
    (W x_t + b of h~), gate [B * repeats, 1]; `bias` is the recurrent bias of h~ alone, zeros before it."""
    hidden = tf.nn.bias_add(tf.matmul(state, kernel), bias)
    if repeats is not None:
        hidden = tf.reshape(hidden, [-1, repeats, 3 * units])
        x_zr, x_h = x_zr[:, None, :], x_h[:, None, :]
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
    x_zr, x_h = _split_gates(x, units)
    bias_zr, bias_h = _split_gates(bias, units)
    inputs = [_steps(x_zr + bias_zr), _steps(x_h), _steps(gate)]
    step_bias = tf.concat([tf.zeros_like(bias_zr), bias_h], axis=0)
    states_ta = tf.TensorArray(x.dtype, size=steps if keep_states else 0, dynamic_size=not keep_states)

    def body(i, state, states):
        state = _step(state, *(ta.read(i) for ta in inputs), kernel, step_bias, units, repeats)
        return i + 1, state, (states.write(i, state) if keep_states else states)

    initial = tf.zeros([tf.shape(gate)[1], units], x.dtype)
    _, final, states = tf.while_loop(lambda i, *_: i < steps, body, (0, initial, states_ta), **LOOP_OPTIONS)
    return states.stack() if keep_states else final


def _backward(d_states, x, gate, kernel, bias, states):
    """Gradients of the recurrence (time-major tensors) for the upstream gradient d_states [T, B, H]."""
    units = kernel.shape[0]
    x_zr, x_h = _split_gates(x, units)
    previous = tf.concat([tf.zeros_like(states[:1]), states[:-1]], axis=0)
    hidden = tf.reshape(tf.nn.bias_add(tf.matmul(_flat(previous), kernel), bias), tf.shape(x))
    hidden_zr, hidden_h = _split_gates(hidden, units)
    update, reset = tf.split(tf.sigmoid(x_zr + hidden_zr), 2, axis=-1)
    candidate = tf.tanh(x_h + reset * hidden_h)
    gated_update = gate * update
    change = candidate - previous
    d_pre_candidate = gated_update * (1.0 - candidate * candidate)
    # d(loss)/d(h_{t-1}) = d(loss)/d(h_t) times each of these [T, B, 4, H], then [h_{t-1} itself, u, r, recurrent h part]
    # through [I; U^T]: one multiply and one matmul a step. The last three are d(pre-activation)/d(h_t).
    coefficients = tf.stack(
        [
            1.0 - gated_update,
            change * gate * update * (1.0 - update),
            d_pre_candidate * hidden_h * reset * (1.0 - reset),
            d_pre_candidate * reset,
        ],
        axis=2,
    )
    transfer = tf.concat([tf.eye(units, dtype=kernel.dtype), tf.transpose(kernel)], axis=0)
    steps = tf.shape(states)[0]
    upstream_ta, coefficients_ta = _steps(d_states), _steps(coefficients)

    def body(i, carried, d_states_out):
        # d_state = d(loss)/d(h_t) in full: the upstream gradient plus what step t + 1 passed back.
        d_state = upstream_ta.read(i) + carried
        scaled = tf.reshape(d_state[:, None, :] * coefficients_ta.read(i), [-1, 4 * units])
        return i - 1, tf.matmul(scaled, transfer), d_states_out.write(i, d_state)

    initial = tf.zeros_like(states[0])
    loop = (steps - 1, initial, tf.TensorArray(states.dtype, size=steps))
    _, _, d_state_ta = tf.while_loop(lambda i, *_: i >= 0, body, loop, **LOOP_OPTIONS)
    d_full = d_state_ta.stack()
    d_hidden = tf.reshape(d_full[:, :, None, :] * coefficients[:, :, 1:], tf.shape(x))
    d_x = tf.concat([d_hidden[..., : 2 * units], d_full * d_pre_candidate], axis=-1)
    d_gate = tf.reduce_sum(d_full * change * update, axis=-1, keepdims=True)
    d_kernel = tf.matmul(_flat(previous), _flat(d_hidden), transpose_a=True)
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
