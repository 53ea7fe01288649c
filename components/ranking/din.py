"""DIN (Zhou et al., KDD 2018): the history pooled by attention to the target, no recurrence."""

from __future__ import annotations

import tensorflow as tf

from components.ranking.attention import TargetAttention
from components.ranking.base import ModelConfig, SequenceRanker, masked_mean


class DIN(SequenceRanker):
    def __init__(self, num_items: int, num_categories: int, config: ModelConfig, **kwargs):
        super().__init__(num_items, num_categories, config, **kwargs)
        # The DIN paper drops the softmax so the pooled vector keeps the intensity of the interest.
        self.attention = TargetAttention("mlp", normalize="none", hidden_units=config.din_attention_units)

    def encode_user(self, hist_items, hist_cats, behaviour: dict, training=None) -> dict:
        """The history's vectors [B, T, D] and mask [B, T], with its attention keys prepared once per user."""
        history, _, mask = self.embed_history(hist_items, hist_cats, behaviour)
        if not self.attention.built:
            self.attention.build([history.shape, history.shape])
        return {
            "history": history,
            "mask": mask,
            "keys": self.attention.prepare_keys(history),
            "history_mean": masked_mean(history, mask),
        }

    def interest(self, user: dict, candidates: tf.Tensor, training=None) -> tf.Tensor:
        """The attention-weighted sum [B, N, D] of the history's vectors for each candidate [B, N, D]."""
        weights = self.attention.weights_from_prepared(candidates, user["history"], user["keys"], user["mask"])
        return tf.matmul(weights, user["history"])
