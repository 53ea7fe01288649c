"""The speed reference: two stacked plain Keras GRUs of DIEN's width, the same embeddings and head,
no attention and no auxiliary loss. DIEN's training throughput is reported relative to this model."""

from __future__ import annotations

import tensorflow as tf

from components.ranking.base import ModelConfig, SequenceRanker, masked_mean


class ReferenceGRU(SequenceRanker):
    def __init__(self, num_items: int, num_categories: int, config: ModelConfig, **kwargs):
        super().__init__(num_items, num_categories, config, **kwargs)
        self.first = tf.keras.layers.GRU(config.hidden_units, return_sequences=True)
        self.second = tf.keras.layers.GRU(config.hidden_units)

    def encode_user(self, hist_items, hist_cats, behaviour: dict, training=None) -> dict:
        """The two stacked Keras GRUs' final state [B, H] of the history [B, T], and the history's mean vector."""
        history, _, mask = self.embed_history(hist_items, hist_cats, behaviour)
        keras_mask = tf.cast(mask, tf.bool)
        states = self.first(history, mask=keras_mask, training=training)
        final = self.second(states, mask=keras_mask, training=training)
        return {"final": final, "history_mean": masked_mean(history, mask)}

    def interest(self, user: dict, candidates: tf.Tensor, training=None) -> tf.Tensor:
        """The user's final state repeated for every candidate: [B, N, H] (no attention: the speed reference)."""
        return tf.tile(user["final"][:, None, :], [1, tf.shape(candidates)[1], 1])
