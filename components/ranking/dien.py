"""DIEN (Zhou et al., AAAI 2019): GRU interest extractor with the auxiliary loss, then AUGRU interest
evolution driven by attention to the target.

Per user (once): embeddings -> GRU states h_t -> the AUGRU's input projections and the attention keys.
Per candidate: attention weights a_t over h_t -> AUGRU recurrence -> final interest -> MLP.
"""

from __future__ import annotations

import tensorflow as tf

from components import schema
from components.ranking.attention import TargetAttention
from components.ranking.auxiliary_loss import AuxiliaryLoss
from components.ranking.base import ModelConfig, SequenceRanker, history_mask, masked_mean
from components.ranking.gru import GatedGRU


class DIEN(SequenceRanker):
    def __init__(self, num_items: int, num_categories: int, config: ModelConfig, **kwargs):
        super().__init__(num_items, num_categories, config, **kwargs)
        self.extractor = GatedGRU(config.hidden_units, name="interest_extractor")
        self.evolution = GatedGRU(config.hidden_units, name="interest_evolution")
        self.attention = TargetAttention(
            config.dien_attention, normalize="softmax", hidden_units=config.din_attention_units
        )
        self.auxiliary = AuxiliaryLoss(config.aux_scorer) if config.aux_weight > 0 else None

    def encode_user(self, hist_items, hist_cats, behaviour: dict, training=None) -> dict:
        """The interest-extractor states [B, T, H] of the history [B, T], with what the evolution layer reuses per
        candidate. The auxiliary loss compares the states with the next step's item vectors alone (`items`): the
        no-click items it tells them from have no behaviour to give them away."""
        history, items, mask = self.embed_history(hist_items, hist_cats, behaviour)
        states = self.extractor(history, mask)
        if not self.attention.built:
            self.attention.build([history.shape, states.shape])
        if not self.evolution.built:
            self.evolution.build(states.shape)
        return {
            "items": items,
            "mask": mask,
            "states": states,
            "keys": self.attention.prepare_keys(states),
            "evolution_inputs": self.evolution.project_inputs(states),
            "history_mean": masked_mean(history, mask),
        }

    def interest(self, user: dict, candidates: tf.Tensor, training=None) -> tf.Tensor:
        """The evolved interest [B, N, H] for each candidate [B, N, D]: the AUGRU over the states, gated by its
        attention."""
        weights = self.attention.weights_from_prepared(candidates, user["states"], user["keys"], user["mask"])
        if candidates.shape[1] == 1:
            final = self.evolution.run(user["evolution_inputs"], weights[:, 0, :])
            return final[:, None, :]
        per_user = tf.shape(candidates)[1]
        gate = tf.reshape(weights, [-1, tf.shape(weights)[-1]])
        final = self.evolution.run(user["evolution_inputs"], gate, repeats=per_user)
        return tf.reshape(final, [tf.shape(candidates)[0], per_user, self.config.hidden_units])

    def add_auxiliary_loss(self, user: dict, features: dict) -> None:
        """Adds the auxiliary loss (next clicked step against a sampled no-click step) in training, when configured."""
        if self.auxiliary is None:
            return
        noclick = self.embedding((features[schema.NOCLICK_ITEMS], features[schema.NOCLICK_CATS]))
        # Both the clicked and the no-click step must be real: mask by the history's padding and the no-click's.
        mask = user["mask"] * history_mask(features[schema.NOCLICK_ITEMS])
        loss = self.auxiliary((user["states"], user["items"], noclick), mask)
        self.add_loss(self.config.aux_weight * loss)
