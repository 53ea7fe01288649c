"""What DIN, DIEN and the reference share: embeddings, the prediction head, and the split between
encoding a user's history once and scoring candidates against it.

Training calls the same two steps with one candidate per user, so the served score is the trained
function, not a re-implementation of it.
"""
from __future__ import annotations

import dataclasses

import components  # noqa: F401
import tensorflow as tf

from components import schema
from components.ranking.embedding import ItemCategoryEmbedding
from components.ranking.mlp import PredictionMLP

MODEL_TYPES = ("dien", "din", "reference_gru")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters; defaults follow the DIEN paper (18-d item and category embeddings, MLP 200-80)."""

    model_type: str = "dien"
    embedding_dim: int = 18  # per field; the history step is item + category = 36 wide, as is the GRU
    mlp_units: tuple = (200, 80)
    activation: str = "dice"  # "dice" | "prelu"
    aux_weight: float = 1.0  # alpha; 0 disables the auxiliary loss
    aux_scorer: str = "dot"  # "dot" (paper eq. 3) | "mlp" (authors' code)
    dien_attention: str = "bilinear"  # "bilinear" (paper eq. 5) | "mlp"
    din_attention_units: tuple = (80, 40)

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; expected one of {MODEL_TYPES}")

    @property
    def hidden_units(self) -> int:
        return 2 * self.embedding_dim


def history_mask(hist_items: tf.Tensor) -> tf.Tensor:
    """1.0 on real steps, 0.0 on padding (index 0), wherever the padding is."""
    return tf.cast(tf.not_equal(hist_items, schema.PAD_INDEX), tf.float32)


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    total = tf.reduce_sum(values * mask[..., None], axis=1)
    return tf.math.divide_no_nan(total, tf.reduce_sum(mask, axis=1, keepdims=True))


class SequenceRanker(tf.keras.Model):
    """P(buy | history, target). Subclasses define `encode_user` (once per user) and `interest` (per candidate).

    Features: hist_items/hist_cats [B, T] int64 (0 = padding), target_item/target_cat [B]. `call` returns logits [B].
    """

    def __init__(self, num_items: int, num_categories: int, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embedding = ItemCategoryEmbedding(num_items, num_categories, config.embedding_dim)
        self.head = PredictionMLP(config.mlp_units, config.activation)

    def encode_user(self, hist_items, hist_cats, training=None) -> dict:
        raise NotImplementedError

    def interest(self, user: dict, candidates: tf.Tensor, training=None) -> tf.Tensor:
        """The user's interest in each candidate: candidates [B, N, D] -> [B, N, H]."""
        raise NotImplementedError

    def embed_history(self, hist_items, hist_cats) -> tuple[tf.Tensor, tf.Tensor]:
        return self.embedding((hist_items, hist_cats)), history_mask(hist_items)

    def candidate_logits(self, user: dict, candidates: tf.Tensor, training=None) -> tf.Tensor:
        """Logits [B, N] of candidates [B, N, D] for users encoded by `encode_user`.

        Head input as in the authors' code: [target, interest, history mean, target * history mean].
        """
        interest = self.interest(user, candidates, training=training)
        mean = tf.broadcast_to(user["history_mean"][:, None, :], tf.shape(candidates))
        features = tf.concat([candidates, interest, mean, candidates * mean], axis=-1)
        return self.head(features, training=training)

    def score_indices(self, hist_items, hist_cats, cand_items, cand_cats) -> tf.Tensor:
        """Probabilities [B, N]: the history is encoded once per user, then every candidate is scored."""
        user = self.encode_user(hist_items, hist_cats, training=False)
        candidates = self.embedding((cand_items, cand_cats))
        return tf.sigmoid(self.candidate_logits(user, candidates, training=False))

    def call(self, features, training=None):
        user = self.encode_user(features[schema.HIST_ITEMS], features[schema.HIST_CATS], training=training)
        target = self.embedding((features[schema.TARGET_ITEM], features[schema.TARGET_CAT]))[:, None, :]
        if training:
            self.add_auxiliary_loss(user, features)
        return self.candidate_logits(user, target, training=training)[:, 0]

    def add_auxiliary_loss(self, user: dict, features: dict) -> None:
        """Models with an auxiliary objective add it here (training only)."""
        del user, features
