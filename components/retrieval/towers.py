"""The two towers: a sequence query tower and a feature candidate tower over one shared item table."""
from __future__ import annotations

import components  # noqa: F401  (tf-keras before TensorFlow)
import tensorflow as tf

from components import schema
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import NUM_PRICE_BUCKETS, Catalogue


class MeanPoolingEncoder(tf.keras.layers.Layer):
    """Average of the history's step embeddings: the order-free reference point."""

    def call(self, steps, mask, training=None):
        weights = tf.cast(mask, steps.dtype)[..., tf.newaxis]
        return tf.reduce_sum(steps * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)


class GRUEncoder(tf.keras.layers.Layer):
    """Final state of a GRU over the history (GRU4Rec style); masked steps carry the state through."""

    def __init__(self, dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.gru = tf.keras.layers.GRU(dim)

    def call(self, steps, mask, training=None):
        return self.gru(self.dropout(steps, training=training), mask=mask, training=training)


class SelfAttentionBlock(tf.keras.layers.Layer):
    """Pre-norm transformer block (SASRec): attention over the real history steps, then a feed-forward net."""

    def __init__(self, dim: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.attention = tf.keras.layers.MultiHeadAttention(num_heads, dim // num_heads, dropout=dropout)
        self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.ffn = tf.keras.Sequential([tf.keras.layers.Dense(dim, activation="gelu"), tf.keras.layers.Dense(dim)])
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x, attention_mask, training=None):
        normed = self.attention_norm(x)
        x = x + self.dropout(self.attention(normed, normed, attention_mask=attention_mask, training=training),
                             training=training)
        return x + self.dropout(self.ffn(self.ffn_norm(x)), training=training)


class SelfAttentionEncoder(tf.keras.layers.Layer):
    """SASRec-style encoder read out at the newest step.

    Positions count back from the newest step, so with left padding the extra padding a batch
    carries changes nothing; padded keys are masked out of attention.
    """

    def __init__(self, dim: int, max_len: int, num_blocks: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.position_embedding = tf.keras.layers.Embedding(max_len, dim)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [SelfAttentionBlock(dim, num_heads, dropout) for _ in range(num_blocks)]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)

    def call(self, steps, mask, training=None):
        length = tf.shape(steps)[1]
        steps = steps + self.position_embedding(tf.range(length - 1, -1, -1))[tf.newaxis]
        keep = tf.cast(mask, steps.dtype)[..., tf.newaxis]
        x = self.dropout(steps, training=training) * keep
        attention_mask = tf.logical_and(mask[:, tf.newaxis, :], tf.ones([1, length, 1], tf.bool))
        for block in self.blocks:
            x = block(x, attention_mask, training=training) * keep
        return self.final_norm(x[:, -1])


def sequence_encoder(config: RetrievalConfig) -> tf.keras.layers.Layer:
    if config.encoder == "mean":
        return MeanPoolingEncoder()
    if config.encoder == "gru":
        return GRUEncoder(config.embedding_dim, config.dropout)
    return SelfAttentionEncoder(config.embedding_dim, config.max_len, config.num_blocks, config.num_heads,
                                config.dropout)


def trim_history(hist_items, hist_cats, max_len: int):
    """Cuts left-padded histories to the batch's longest (at most max_len) and gives every row a step.

    A row of only padding (a user we know nothing about) reads as one OOV step, so it still gets a
    query embedding instead of NaNs from an all-masked attention.
    """
    hist_items = tf.cast(hist_items[:, -max_len:], tf.int64)
    hist_cats = tf.cast(hist_cats[:, -max_len:], tf.int64)
    mask = tf.not_equal(hist_items, schema.PAD_INDEX)
    longest = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)), 1)
    hist_items, hist_cats, mask = hist_items[:, -longest:], hist_cats[:, -longest:], mask[:, -longest:]
    empty = tf.logical_not(tf.reduce_any(mask, axis=1, keepdims=True))
    newest = tf.one_hot(tf.shape(hist_items)[1] - 1, tf.shape(hist_items)[1], on_value=True, off_value=False)
    fill = tf.logical_and(empty, newest[tf.newaxis])
    hist_items = tf.where(fill, tf.constant(schema.OOV_INDEX, tf.int64), hist_items)
    hist_cats = tf.where(fill, tf.constant(schema.OOV_INDEX, tf.int64), hist_cats)
    return hist_items, hist_cats, tf.logical_or(mask, fill)


class QueryTower(tf.keras.Model):
    """History (item and category indices, left-padded) -> query embedding [B, D]."""

    def __init__(self, item_embedding, category_embedding, config: RetrievalConfig, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.category_embedding = category_embedding
        self.encoder = sequence_encoder(config)
        self.projection = tf.keras.layers.Dense(config.embedding_dim)
        self.max_len = config.max_len

    def call(self, inputs, training=False):
        hist_items, hist_cats, mask = trim_history(inputs[0], inputs[1], self.max_len)
        steps = self.item_embedding(hist_items) + self.category_embedding(hist_cats)
        return self.projection(self.encoder(steps, mask, training=training))


class CandidateTower(tf.keras.Model):
    """Item index -> candidate embedding [N, D]: the shared item row plus category, brand and price rows.

    Side features let a rarely bought item borrow from its category and brand.
    """

    def __init__(self, item_embedding, category_embedding, catalogue: Catalogue, config: RetrievalConfig,
                 **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.category_embedding = category_embedding
        self.brand_embedding = tf.keras.layers.Embedding(catalogue.num_brands, config.embedding_dim)
        self.price_embedding = tf.keras.layers.Embedding(NUM_PRICE_BUCKETS + 1, config.embedding_dim)
        self.item_category = tf.constant(catalogue.item_category, tf.int64)
        self.item_brand = tf.constant(catalogue.item_brand, tf.int64)
        self.item_price_bucket = tf.constant(catalogue.item_price_bucket, tf.int64)

    def call(self, item_index, training=False):
        item_index = tf.cast(item_index, tf.int64)
        return (
            self.item_embedding(item_index)
            + self.category_embedding(tf.gather(self.item_category, item_index))
            + self.brand_embedding(tf.gather(self.item_brand, item_index))
            + self.price_embedding(tf.gather(self.item_price_bucket, item_index))
        )

