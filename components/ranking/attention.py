"""Target attention over a user's history: DIN's activation unit and DIEN's bilinear attention.

Both score every (candidate, step) pair, so one layer serves training (one candidate per user) and
re-ranking (N candidates per user, history encoded once). Shapes: queries [B, N, Dq], keys [B, T, Dk],
mask [B, T] -> weights [B, N, T], zero on padded steps.
"""

from __future__ import annotations

import tensorflow as tf

NEG_INF = -1e9


class TargetAttention(tf.keras.layers.Layer):
    """Attention weights of each history step for each candidate.

    scorer="mlp": DIN's activation unit, an MLP on [q, k, q - k, q * k] (Zhou et al., KDD 2018). Its first
      layer is linear, so it is computed as q A + k B + (q * k) C: the q and k terms once per candidate and
      once per step instead of once per pair, the same function at a fraction of the cost.
    scorer="bilinear": DIEN's eq. 5, score = k W q.
    normalize="softmax" (DIEN) makes the weights sum to one over valid steps; "none" (DIN) keeps the raw
      sigmoid-free scores so the pooled vector keeps the intensity of the interest.
    """

    def __init__(self, scorer: str = "mlp", normalize: str = "softmax", hidden_units=(80, 40), **kwargs):
        super().__init__(**kwargs)
        if scorer not in ("mlp", "bilinear"):
            raise ValueError(f"unknown attention scorer {scorer!r}; expected 'mlp' or 'bilinear'")
        if normalize not in ("softmax", "none"):
            raise ValueError(f"unknown attention normalization {normalize!r}; expected 'softmax' or 'none'")
        self.scorer, self.normalize, self.hidden_units = scorer, normalize, tuple(hidden_units)

    def build(self, input_shape):
        """Creates the scorer's weights from the query [..., Dq] and key [..., Dk] sizes (MLP needs them equal)."""
        query_dim, key_dim = int(input_shape[0][-1]), int(input_shape[1][-1])
        if self.scorer == "bilinear":
            self.bilinear = self.add_weight(name="bilinear", shape=(key_dim, query_dim), initializer="glorot_uniform")
        else:
            if query_dim != key_dim:
                raise ValueError(f"MLP attention needs equal query and key sizes, got {query_dim} and {key_dim}")
            first = self.hidden_units[0]
            init = "glorot_uniform"
            self.query_kernel = self.add_weight(name="query_kernel", shape=(query_dim, first), initializer=init)
            self.key_kernel = self.add_weight(name="key_kernel", shape=(key_dim, first), initializer=init)
            self.product_kernel = self.add_weight(name="product_kernel", shape=(key_dim, first), initializer=init)
            self.first_bias = self.add_weight(name="first_bias", shape=(first,), initializer="zeros")
            self.deeper = [tf.keras.layers.Dense(u, activation="sigmoid") for u in self.hidden_units[1:]]
            self.out = tf.keras.layers.Dense(1)
        super().build(input_shape)

    def prepare_keys(self, keys: tf.Tensor) -> tf.Tensor:
        """The per-step part of the score, computed once per user."""
        if self.scorer == "bilinear":
            return tf.tensordot(keys, self.bilinear, axes=1)
        return tf.tensordot(keys, self.key_kernel, axes=1) + self.first_bias

    def scores(self, queries: tf.Tensor, keys: tf.Tensor, prepared_keys: tf.Tensor) -> tf.Tensor:
        """Unnormalized scores [B, N, T]."""
        if self.scorer == "bilinear":
            return tf.matmul(queries, prepared_keys, transpose_b=True)
        query_part = tf.tensordot(queries, self.query_kernel, axes=1)[:, :, None, :]
        product = queries[:, :, None, :] * keys[:, None, :, :]
        hidden = tf.sigmoid(query_part + prepared_keys[:, None] + tf.tensordot(product, self.product_kernel, axes=1))
        for layer in self.deeper:
            hidden = layer(hidden)
        return self.out(hidden)[..., 0]

    def weights_from_prepared(self, queries, keys, prepared_keys, mask) -> tf.Tensor:
        """Weights [B, N, T] of history steps (keys [B, T, D], mask [B, T]) for candidates [B, N, D]; keys prepared once
        per user."""
        scores = self.scores(queries, keys, prepared_keys)
        valid = tf.cast(mask, tf.bool)[:, None, :]
        if self.normalize == "softmax":
            weights = tf.nn.softmax(tf.where(valid, scores, NEG_INF), axis=-1)
        else:
            weights = scores
        return tf.where(valid, weights, 0.0)

    def call(self, inputs, mask):
        """inputs = (queries [B, N, Dq], keys [B, T, Dk]); mask [B, T]."""
        queries, keys = inputs
        return self.weights_from_prepared(queries, keys, self.prepare_keys(keys), mask)

    def get_config(self):
        """The layer's settings, so Keras can rebuild it."""
        return {
            **super().get_config(),
            "scorer": self.scorer,
            "normalize": self.normalize,
            "hidden_units": self.hidden_units,
        }
