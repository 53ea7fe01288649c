"""The prediction MLP (200-80, PReLU or Dice) that turns the interest and the target into a logit."""

from __future__ import annotations

import tensorflow as tf


class Dice(tf.keras.layers.Layer):
    """DIN's data-adaptive activation: p(s) s + (1 - p(s)) alpha s with p(s) = sigmoid(normalized s).

    The normalization uses batch statistics in training and their moving averages at inference, so a
    served score does not depend on the other rows of the batch.
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.norm = tf.keras.layers.BatchNormalization(center=False, scale=False, epsilon=epsilon)

    def build(self, input_shape):
        """Creates alpha, one per feature of inputs [..., D]."""
        self.alpha = self.add_weight(name="alpha", shape=(int(input_shape[-1]),), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, training=None):
        """Dice of inputs [..., D], the same shape: the batch-normalised gate mixes s and alpha * s."""
        probability = tf.sigmoid(self.norm(inputs, training=training))
        return probability * inputs + (1.0 - probability) * self.alpha * inputs

    def get_config(self):
        """The layer's settings, so Keras can rebuild it."""
        return {**super().get_config(), "epsilon": self.epsilon}


def activation_layer(name: str) -> tf.keras.layers.Layer:
    """The MLP's activation by name: DIN's Dice or PReLU."""
    if name == "dice":
        return Dice()
    if name == "prelu":
        return tf.keras.layers.PReLU()
    raise ValueError(f"unknown MLP activation {name!r}; expected 'dice' or 'prelu'")


class PredictionMLP(tf.keras.layers.Layer):
    """Dense layers of `units` with the chosen activation, then one logit. Inputs [..., D] -> logits [...]."""

    def __init__(self, units=(200, 80), activation: str = "dice", **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation = tuple(units), activation
        self.dense = [tf.keras.layers.Dense(u) for u in self.units]
        self.activations = [activation_layer(activation) for _ in self.units]
        self.out = tf.keras.layers.Dense(1)

    def call(self, inputs, training=None):
        """Logits [...] of inputs [..., D] through the hidden layers."""
        hidden = inputs
        for dense, act in zip(self.dense, self.activations):
            hidden = act(dense(hidden), training=training) if isinstance(act, Dice) else act(dense(hidden))
        return self.out(hidden)[..., 0]

    def get_config(self):
        """The layer's settings, so Keras can rebuild it."""
        return {**super().get_config(), "units": self.units, "activation": self.activation}
