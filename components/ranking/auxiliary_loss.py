"""DIEN's auxiliary loss (Zhou et al., AAAI 2019, eq. 3): the interest state h_t must tell the item clicked
next, e_{t+1}, from the sampled no-click item at that step, ê_{t+1}.

    L_aux = - mean over valid t of [ log s(h_t, e_{t+1}) + log(1 - s(h_t, ê_{t+1})) ]

A pair counts only when both step t and step t + 1 are real (not padding). It is computed for all steps
in one vectorised pass after the GRU, so it adds no work inside the recurrence. The next step's items are the
items rolled back by one step (the last step, which has no next one, is masked out) rather than sliced: the
gradient of a roll is a roll, that of a strided slice a slow scatter into zeros.
"""

from __future__ import annotations

import tensorflow as tf


class AuxiliaryLoss(tf.keras.layers.Layer):
    """scorer="mlp": the authors' code, an MLP (100-50, sigmoid) on [h_t, e]; scorer="dot": the paper's
    sigmoid of the inner product <h_t, e> (needs the GRU width to equal the embedding width)."""

    def __init__(self, scorer: str = "mlp", hidden_units=(100, 50), **kwargs):
        super().__init__(**kwargs)
        if scorer not in ("mlp", "dot"):
            raise ValueError(f"unknown auxiliary scorer {scorer!r}; expected 'mlp' or 'dot'")
        self.scorer, self.hidden_units = scorer, tuple(hidden_units)
        if scorer == "mlp":
            self.net = [tf.keras.layers.Dense(u, activation="sigmoid") for u in self.hidden_units]
            self.net.append(tf.keras.layers.Dense(1))

    def logits(self, states: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """Logits [B, T] that the next step's item [B, T, D] follows the interest state [B, T, H]."""
        if self.scorer == "dot":
            return tf.reduce_sum(states * items, axis=-1)
        hidden = tf.concat([states, items], axis=-1)
        for layer in self.net:
            hidden = layer(hidden)
        return hidden[..., 0]

    def call(self, inputs, mask):
        """inputs = (states [B, T, H], clicked [B, T, D], noclick [B, T, D]); mask [B, T]. Returns a scalar:
        softplus(-logit) is the log loss of a clicked pair, softplus(logit) that of a no-click one."""
        states, clicked, noclick = inputs
        mask = tf.cast(mask, states.dtype)
        pair_mask = tf.concat([mask[:, :-1] * mask[:, 1:], tf.zeros_like(mask[:, :1])], axis=1)
        clicked_logits = self.logits(states, tf.roll(clicked, -1, axis=1))
        noclick_logits = self.logits(states, tf.roll(noclick, -1, axis=1))
        losses = tf.nn.softplus(-clicked_logits) + tf.nn.softplus(noclick_logits)
        return tf.math.divide_no_nan(tf.reduce_sum(losses * pair_mask), tf.reduce_sum(pair_mask))

    def get_config(self):
        """The layer's settings, so Keras can rebuild it."""
        return {**super().get_config(), "scorer": self.scorer, "hidden_units": self.hidden_units}
