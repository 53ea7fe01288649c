"""The two towers: a sequence query tower and a feature candidate tower over one shared item table."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from components import schema
from components.features import behaviour
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import NUM_PRICE_BUCKETS, Catalogue

# UNCONVERTED: the towers' calls (and the layers they call) are traced as written, without autograph's rewrite of
# their Python (tf.autograph.experimental.do_not_convert): none branches or loops on a tensor's value, and the rewrite
# was ~0.5 CPU s of each run's tracing (lifecycle shop). Code added here must keep to tf ops (tf.where, tf.while_loop).

# Every encoder maps steps [B, T, D] with their mask [B, T], right-aligned (oldest step in column 0,
# padding after the newest), to one output per step [B, T, D] that depends on that step and the
# earlier ones only: a causal encoder, so a loss at every step never lets a step see its future, and
# step t's output is exactly the query embedding of the history that ends at t.


class MeanPoolingEncoder(tf.keras.layers.Layer):
    """Running average of the steps so far: the order-free reference point."""

    def call(self, steps, mask, training=None):
        """The running mean [B, T, D] of steps [B, T, D] over the real steps (mask [B, T]) so far."""
        weights = tf.cast(mask, steps.dtype)[..., tf.newaxis]
        return tf.cumsum(steps * weights, axis=1) / tf.maximum(tf.cumsum(weights, axis=1), 1.0)


class GRUEncoder(tf.keras.layers.Layer):
    """GRU state after each step (GRU4Rec style); padded steps after the newest carry the state on."""

    def __init__(self, dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.gru = tf.keras.layers.GRU(dim, return_sequences=True)
        if not tf.config.list_logical_devices("GPU"):
            # with no GPU, trace the standard GRU alone: Keras otherwise builds the cuDNN variant beside it in every
            # graph (for a run-time choice that always picks the standard one here), ~1.4 of a lifecycle run's ~4.4
            # CPU s of tracing and first execution; same weights and results
            self.gru._could_use_gpu_kernel = False

    def call(self, steps, mask, training=None):
        """The GRU state [B, T, D] after each of steps [B, T, D], the padded ones (mask [B, T]) skipped."""
        return self.gru(self.dropout(steps, training=training), mask=mask, training=training)


class CausalFilter(tf.keras.layers.Layer):
    """A learned per-channel filter over the last `max_len` steps, applied in the frequency domain.

    BSARec and TV-Rec filter the history with Fourier-domain filters over the whole window, which
    lets a step see later steps. Here the filter h[k] (lag k = 0..max_len-1) acts only on the past:
    zero-padding to twice the length makes the FFT product a linear, not circular, convolution, so
    y[t] = sum_k h[k] x[t-k] over k <= t. h starts as a moving average of the last few steps (the
    low-pass bias that BSARec adds to attention) and is learned from there.
    """

    INIT_STEPS = 3

    def __init__(self, max_len: int, **kwargs):
        super().__init__(**kwargs)
        self.max_len = max_len

    def build(self, input_shape):
        """Creates the filter taps [max_len, D], starting as a short moving average."""
        dim = int(input_shape[-1])
        initial = [[1.0 / self.INIT_STEPS if k < self.INIT_STEPS else 0.0] * dim for k in range(self.max_len)]
        self.taps = self.add_weight(
            name="taps", shape=[self.max_len, dim], initializer=tf.keras.initializers.Constant(initial)
        )
        super().build(input_shape)

    def call(self, x):
        """x [B, T, D] filtered causally per channel (step t sees steps up to t), by FFT over a doubled length."""
        length = tf.shape(x)[1]
        fft_length = [2 * length]
        signal = tf.transpose(x, [0, 2, 1])  # [B, D, T]: the FFT runs over the last axis
        taps = tf.transpose(self.taps[:length], [1, 0])  # [D, T]
        spectrum = tf.signal.rfft(signal, fft_length) * tf.signal.rfft(taps, fft_length)[tf.newaxis]
        return tf.transpose(tf.signal.irfft(spectrum, fft_length)[:, :, :length], [0, 2, 1])


class RecencyAttention(tf.keras.layers.Layer):
    """Multi-head causal attention whose logits carry a learned bias per head and lag (step t to step t - k).

    With a loss at every step, each step is the newest of its own history, so absolute positions
    (counted from the oldest step) cannot say how recent a step is; a bias on the lag can, which is
    what SASRec's left-padded positions give a model that only reads the last step. Lags past
    max_len - 1 share the last bias.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, max_len: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.head_dim, self.max_len = num_heads, dim // num_heads, max_len
        self.query = tf.keras.layers.Dense(dim)
        self.key = tf.keras.layers.Dense(dim)
        self.value = tf.keras.layers.Dense(dim)
        self.output_dense = tf.keras.layers.Dense(dim)
        self.dropout = tf.keras.layers.Dropout(dropout)

    def build(self, input_shape):
        """Creates the lag biases [num_heads, max_len], all zero at the start (plain attention)."""
        self.lag_bias = self.add_weight(name="lag_bias", shape=[self.num_heads, self.max_len], initializer="zeros")
        super().build(input_shape)

    def _heads(self, x):
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [batch, length, self.num_heads, self.head_dim]), [0, 2, 1, 3])

    def call(self, x, attention_mask, training=None):
        """x [B, T, D], attention_mask [B, T, T] (True where step t may read step s) -> [B, T, D]."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        logits = tf.matmul(q, k, transpose_b=True) / tf.sqrt(tf.cast(self.head_dim, x.dtype))  # [B, H, T, T]
        steps = tf.range(tf.shape(x)[1])
        lag = tf.clip_by_value(steps[:, tf.newaxis] - steps[tf.newaxis, :], 0, self.max_len - 1)
        logits += tf.gather(self.lag_bias, lag, axis=1)[tf.newaxis]
        logits = tf.where(attention_mask[:, tf.newaxis], logits, tf.constant(-1e9, x.dtype))
        weights = self.dropout(tf.nn.softmax(logits, axis=-1), training=training)
        out = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])
        return self.output_dense(tf.reshape(out, tf.shape(x)))


class SelfAttentionBlock(tf.keras.layers.Layer):
    """Pre-norm transformer block (SASRec): causal attention over the real steps, then a feed-forward net.

    With `filter_mix` > 0 (BSARec's mix of an inductive bias with attention) the token mixer is
    filter_mix * CausalFilter + (1 - filter_mix) * attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float,
        max_len: int,
        filter_mix: float = 0.0,
        recency_bias: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.recency_bias = recency_bias
        if recency_bias:
            self.attention = RecencyAttention(dim, num_heads, dropout, max_len)
        else:
            self.attention = tf.keras.layers.MultiHeadAttention(num_heads, dim // num_heads, dropout=dropout)
        self.filter_mix = filter_mix
        self.filter = CausalFilter(max_len) if filter_mix > 0 else None
        self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.ffn = tf.keras.Sequential([tf.keras.layers.Dense(dim, activation="gelu"), tf.keras.layers.Dense(dim)])
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x, attention_mask, training=None):
        """One block over x [B, T, D] with attention_mask [B, T, T]: attention (mixed with the filter), then the
        feed-forward net."""
        normed = self.attention_norm(x)
        if self.recency_bias:
            mixed = self.attention(normed, attention_mask, training=training)
        else:
            mixed = self.attention(normed, normed, attention_mask=attention_mask, training=training)
        if self.filter is not None:
            mixed = self.filter_mix * self.filter(normed) + (1.0 - self.filter_mix) * mixed
        x = x + self.dropout(mixed, training=training)
        return x + self.dropout(self.ffn(self.ffn_norm(x)), training=training)


class SelfAttentionEncoder(tf.keras.layers.Layer):
    """SASRec-style causal encoder: step t attends to the real steps up to t.

    positions "absolute": position embeddings counted from the oldest step of the (max_len) window,
    which is column 0 of the right-aligned input, so padding changes nothing and a prefix reads the
    same at every length. "lag": no position embeddings; each attention logit carries a learned
    bias for how many steps back the key is (RecencyAttention), also the same at every length.
    """

    def __init__(
        self,
        dim: int,
        max_len: int,
        num_blocks: int,
        num_heads: int,
        dropout: float,
        filter_mix: float = 0.0,
        positions: str = "absolute",
        **kwargs,
    ):
        super().__init__(**kwargs)
        lag = positions == "lag"
        self.position_embedding = None if lag else tf.keras.layers.Embedding(max_len, dim)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [
            SelfAttentionBlock(dim, num_heads, dropout, max_len, filter_mix, recency_bias=lag)
            for _ in range(num_blocks)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)

    def call(self, steps, mask, training=None):
        """The encoded steps [B, T, D] of steps [B, T, D] (mask [B, T]): positions added, causal blocks applied."""
        length = tf.shape(steps)[1]
        if self.position_embedding is not None:
            steps = steps + self.position_embedding(tf.range(length))[tf.newaxis]
        keep = tf.cast(mask, steps.dtype)[..., tf.newaxis]
        x = self.dropout(steps, training=training) * keep
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        attention_mask = tf.logical_and(mask[:, tf.newaxis, :], causal[tf.newaxis])
        for block in self.blocks:
            x = block(x, attention_mask, training=training) * keep
        return self.final_norm(x)


def sequence_encoder(config: RetrievalConfig) -> tf.keras.layers.Layer:
    """The query tower's sequence encoder the config names: mean, GRU, self-attention or self-attention with filter."""
    if config.encoder == "mean":
        return MeanPoolingEncoder()
    if config.encoder == "gru":
        return GRUEncoder(config.embedding_dim, config.dropout)
    filter_mix = config.filter_mix if config.encoder == "filter" else 0.0
    return SelfAttentionEncoder(
        config.embedding_dim,
        config.max_len,
        config.num_blocks,
        config.num_heads,
        config.dropout,
        filter_mix,
        config.positions,
    )


def trim_history(hist_items, hist_cats, max_len: int, hist_gaps=None):
    """Cuts left-padded histories to the batch's longest (at most max_len) and gives every row a step.

    A row of only padding (a user we know nothing about) reads as one OOV step, so it still gets a
    query embedding instead of NaNs from an all-masked attention. `hist_gaps` [B, L] (or None) is cut
    with the items, its filled step NO_GAP; it comes back as the fourth value (None if not given).
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
    if hist_gaps is not None:
        hist_gaps = tf.cast(hist_gaps[:, -max_len:], tf.int64)[:, -longest:]
        hist_gaps = tf.where(fill, tf.constant(schema.NO_GAP, tf.int64), hist_gaps)
    return hist_items, hist_cats, tf.logical_or(mask, fill), hist_gaps


def request_gaps(hist_gaps, request_gap):
    """Each step's request gap [B, T]: the gap to the step after it, the newest step's `request_gap` [B]
    (columns of left-padded gaps [B, T]; a padded column's value is never read)."""
    return tf.concat([hist_gaps[:, 1:], tf.cast(request_gap, tf.int64)[:, tf.newaxis]], axis=1)


class QueryTower(tf.keras.Model):
    """History (item and category indices, left-padded; with config.time_gaps also each step's gap and the
    request gap) -> query embedding [B, D] of its newest step."""

    def __init__(self, item_embedding, category_embedding, config: RetrievalConfig, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.category_embedding = category_embedding
        self.encoder = sequence_encoder(config)
        self.projection = tf.keras.layers.Dense(config.embedding_dim)
        self.max_len = config.max_len
        self.time_gaps = config.time_gaps
        if config.time_gaps:
            # bucket 0 (NO_GAP: unknown, or a user's first step) starts at zero like every bucket
            self.gap_embedding = tf.keras.layers.Embedding(
                behaviour.NUM_GAP_BUCKETS, config.embedding_dim, embeddings_initializer="zeros", name="gap_embedding"
            )
            self.request_embedding = tf.keras.layers.Embedding(
                behaviour.NUM_GAP_BUCKETS,
                config.embedding_dim,
                embeddings_initializer="zeros",
                name="request_gap_embedding",
            )

    @tf.autograph.experimental.do_not_convert  # UNCONVERTED above
    def sequence(self, inputs, training=False):
        """One query embedding per step [B, T, D], in the columns of the trimmed left-padded input
        (T = the batch's longest history, at most max_len); step t reads steps up to t only.

        inputs: (hist_items, hist_cats) or (hist_items, hist_cats, hist_gaps [B, L], request_gap [B]); step t's
        request is then the gap to step t + 1 (the newest step's: request_gap), which is the time a query at
        that step is asked, never anything the step does not know when it is asked."""
        gaps = inputs[2] if self.time_gaps and len(inputs) > 2 else None
        hist_items, hist_cats, mask, gaps = trim_history(inputs[0], inputs[1], self.max_len, gaps)
        # right-align for the encoders (stable sort: real steps first, in order) and back afterwards
        order = tf.argsort(tf.cast(tf.logical_not(mask), tf.int32), axis=1, stable=True)
        steps = self.item_embedding(hist_items) + self.category_embedding(hist_cats)
        if self.time_gaps:
            if gaps is None:  # a caller that knows no gaps: every step and request NO_GAP
                gaps = tf.fill(tf.shape(hist_items), tf.constant(schema.NO_GAP, tf.int64))
                requests = gaps
            else:
                requests = request_gaps(gaps, inputs[3])
            steps += self.gap_embedding(behaviour.gap_buckets(gaps))
        encoded = self.encoder(
            tf.gather(steps, order, batch_dims=1), tf.gather(mask, order, batch_dims=1), training=training
        )
        encoded = tf.gather(encoded, tf.argsort(order, axis=1), batch_dims=1)
        if self.time_gaps:
            encoded += self.request_embedding(behaviour.gap_buckets(requests))
        return self.projection(encoded)

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=False):
        """The query embedding [B, D]: the encoder's output at the newest step of the history [B, T]."""
        return self.sequence(inputs, training=training)[:, -1]


class CandidateTower(tf.keras.Model):
    """Item index -> candidate embedding [N, D]: the shared item row plus category, brand and price rows.

    Side features let a rarely bought item borrow from its category and brand. An item whose id row was never
    trained (`id_known` False: no train target, and not carried over by a warm start) is its features alone: a new
    item's id row is untrained noise, so the feature path carries it (config.features_only_unseen).
    """

    def __init__(
        self,
        item_embedding,
        category_embedding,
        catalogue: Catalogue,
        config: RetrievalConfig,
        id_known=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if id_known is None:
            id_known = catalogue.train_count > 0
        if not config.features_only_unseen:
            id_known = np.ones(catalogue.num_items, bool)
        self.item_features = config.item_features
        if not config.item_features:
            id_known = np.ones(catalogue.num_items, bool)  # the id row is all there is
        self.id_weight = tf.constant(np.asarray(id_known, np.float32)[:, None])
        self.item_embedding = item_embedding
        self.category_embedding = category_embedding
        self.brand_embedding = tf.keras.layers.Embedding(catalogue.num_brands, config.embedding_dim)
        self.price_embedding = tf.keras.layers.Embedding(NUM_PRICE_BUCKETS + 1, config.embedding_dim)
        self.item_category = tf.constant(catalogue.item_category, tf.int64)
        self.item_brand = tf.constant(catalogue.item_brand, tf.int64)
        self.item_price_bucket = tf.constant(catalogue.item_price_bucket, tf.int64)
        if not config.item_features:  # unused, but built: the warm start and its files carry every table
            self.brand_embedding.build((None,))
            self.price_embedding.build((None,))
        # config.id_dropout: in training, a candidate row's id row is left out with this probability (no rescaling),
        # so the features' rows alone must score the item, as they do for a new item at serving
        self.id_dropout = tf.keras.layers.Dropout(config.id_dropout) if config.id_dropout > 0 else None

    @tf.autograph.experimental.do_not_convert
    def call(self, item_index, training=False):
        """The candidate embedding [N, D] of item indices [N]: id row (weighted) plus category, brand and price rows."""
        item_index = tf.cast(item_index, tf.int64)
        if not self.item_features:
            return self.item_embedding(item_index)
        id_weight = tf.gather(self.id_weight, item_index)
        if self.id_dropout is not None:  # a row Dropout keeps (as 1 / (1 - rate) in training, 1 otherwise) counts 1
            id_weight *= tf.cast(self.id_dropout(tf.ones_like(id_weight), training=training) > 0, id_weight.dtype)
        return (
            self.item_embedding(item_index) * id_weight
            + self.category_embedding(tf.gather(self.item_category, item_index))
            + self.brand_embedding(tf.gather(self.item_brand, item_index))
            + self.price_embedding(tf.gather(self.item_price_bucket, item_index))
        )
