"""DIEN's auxiliary loss (Zhou et al., AAAI 2019, eq. 3): the interest state h_t must tell the item clicked
next, e_{t+1}, from the sampled no-click item at that step, ê_{t+1}.

    L_aux = - mean over valid t of [ log s(h_t, e_{t+1}) + log(1 - s(h_t, ê_{t+1})) ]

A pair counts only when both step t and step t + 1 are real (not padding). It is computed for all steps
in one vectorised pass after the GRU, so it adds no work inside the recurrence.
"""

from __future__ import annotations

import tensorflow as tf

_LABELS = tf.constant([1.0, 0.0])[:, None, None]  # clicked, no-click


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
        """inputs = (states [B, T, H], clicked [B, T, D], noclick [B, T, D]); mask [B, T]. Returns a scalar.

        The clicked and no-click items are scored in one pass, stacked on a leading axis of 2 (labels 1 and 0).
        """
        states, clicked, noclick = inputs
        mask = tf.cast(mask, states.dtype)
        pair_mask = mask[:, :-1] * mask[:, 1:]
        items = tf.stack([clicked[:, 1:], noclick[:, 1:]])
        logits = self.logits(
            tf.broadcast_to(states[None, :, :-1], tf.shape(items)) if self.scorer == "mlp" else states[None, :, :-1],
            items,
        )
        losses = tf.nn.sigmoid_cross_entropy_with_logits(tf.broadcast_to(_LABELS, tf.shape(logits)), logits)
        return tf.math.divide_no_nan(tf.reduce_sum(losses * pair_mask), tf.reduce_sum(pair_mask))

    def get_config(self):
        """The layer's settings, so Keras can rebuild it."""
        return {**super().get_config(), "scorer": self.scorer, "hidden_units": self.hidden_units}
