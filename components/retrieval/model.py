"""The two-tower model as a tfrs.Model: in-batch (logQ), full-catalogue or mixed-negative softmax,
on the newest step of each prefix or on every step of each user's train sequence."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from components import schema
from components.retrieval import losses
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import Catalogue
from components.retrieval.towers import CandidateTower, QueryTower


def retrieval_task(config: RetrievalConfig) -> tfrs.tasks.Retrieval:
    """In-batch softmax; accidental hits (the same item as another row's positive) are not negatives. The task
    returns each row's loss (the model averages them): Keras refuses a reducing loss under a tf.distribute strategy."""
    return tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
        temperature=config.temperature,
        remove_accidental_hits=True,
    )


class TwoTowerModel(tfrs.Model):
    """Query tower over the history, candidate tower over item features, one shared item table."""

    def __init__(self, catalogue: Catalogue, config: RetrievalConfig, id_known=None, **kwargs):
        """`id_known` [num_items] bool: items whose id row counts (default: those with a train target)."""
        super().__init__(**kwargs)
        self.config = config
        self.num_items = catalogue.num_items
        item_embedding = tf.keras.layers.Embedding(catalogue.num_items, config.embedding_dim, name="item_embedding")
        category_embedding = tf.keras.layers.Embedding(
            catalogue.num_categories, config.embedding_dim, name="category_embedding"
        )
        self.query_tower = QueryTower(item_embedding, category_embedding, config)
        self.candidate_tower = CandidateTower(item_embedding, category_embedding, catalogue, config, id_known)
        self.sampling_probability = tf.constant(catalogue.sampling_probability(), tf.float32)
        self.task = retrieval_task(config)
        self.mean_loss = tf.keras.metrics.Mean(name="mean_loss")  # the epoch's average, for the progress line

    def _finish(self, embeddings):
        return tf.math.l2_normalize(embeddings, axis=-1) if self.config.normalize else embeddings

    def query_embedding(self, hist_items, hist_cats, training=False, hist_gaps=None, request_gap=None):
        """The query embedding [B, D] of histories [B, T] (normalised when the config says so); with
        config.time_gaps, each step's gap [B, T] and the request gap [B] (None: unknown, read as NO_GAP)."""
        inputs = (hist_items, hist_cats)
        if hist_gaps is not None:
            inputs += (hist_gaps, request_gap)
        return self._finish(self.query_tower(inputs, training=training))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)] * 2, reduce_retracing=True, autograph=False)
    def encode(self, hist_items, hist_cats):
        """Inference-time query embeddings as one compiled graph (eager attention is ~10x slower)."""
        return self.query_embedding(hist_items, hist_cats)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.int64)] * 3 + [tf.TensorSpec([None], tf.int64)],
        reduce_retracing=True,
        autograph=False,
    )
    def encode_with_gaps(self, hist_items, hist_cats, hist_gaps, request_gap):
        """`encode` with each step's gap and the request gap, in seconds (config.time_gaps)."""
        return self.query_embedding(hist_items, hist_cats, hist_gaps=hist_gaps, request_gap=request_gap)

    def candidate_embedding(self, item_index, training=False):
        """The candidate embedding [N, D] of item indices [N] (normalised when the config says so)."""
        return self._finish(self.candidate_tower(item_index, training=training))

    @tf.autograph.experimental.do_not_convert  # as the towers (towers.UNCONVERTED)
    def _queries_and_targets(self, features, training):
        """(queries [N, D], target items [N], sequence of each row [N] or None): one per prefix example, or
        with every_position one per step of each sequence that has a target (features[TARGET_ITEM] [B, T],
        PAD = no target), with the batch row of its sequence."""
        inputs = (features[schema.HIST_ITEMS], features[schema.HIST_CATS])
        if self.config.time_gaps and schema.HIST_GAPS in features:  # a batch without gaps reads them as unknown
            inputs += (features[schema.HIST_GAPS], features[schema.TARGET_GAP])
        if not self.config.every_position:
            query = self._finish(self.query_tower(inputs, training=training))
            return query, tf.cast(features[schema.TARGET_ITEM], tf.int64), None
        steps = self.query_tower.sequence(inputs, training=training)
        targets = tf.cast(features[schema.TARGET_ITEM], tf.int64)[:, -tf.shape(steps)[1] :]
        has_target = tf.not_equal(targets, schema.PAD_INDEX)
        sequence = tf.broadcast_to(tf.range(tf.shape(targets)[0])[:, tf.newaxis], tf.shape(targets))
        return (
            self._finish(tf.boolean_mask(steps, has_target)),
            tf.boolean_mask(targets, has_target),
            tf.boolean_mask(sequence, has_target),
        )

    def compute_loss(self, features, training=False):
        """The configured softmax loss of one batch, also tracked as the epoch's mean loss."""
        loss = self._loss(*self._queries_and_targets(features, training), training)
        self.mean_loss.update_state(loss)
        # under MirroredStrategy the replicas' gradients are summed: each replica contributes its share of the mean
        return loss / tf.distribute.get_strategy().num_replicas_in_sync

    def _loss(self, queries, target, sequence, training):
        temperature = self.config.temperature
        if self.config.loss == "full_softmax":
            items = self.candidate_embedding(tf.range(self.num_items, dtype=tf.int64), training=training)
            return losses.full_softmax_loss(queries, items, target, temperature)
        candidates = self.candidate_embedding(target, training=training)
        if self.config.loss == "mixed" or sequence is not None:
            # at every position the in-batch loss is the mixed one without uniform negatives, so that it leaves out
            # the row's own sequence too (losses module docstring); its per-draw logQ differs from the mixture's
            # B * p by log B in every column, which the softmax does not see
            num_negatives = self.config.num_negatives if self.config.loss == "mixed" else 0
            negative_ids = losses.uniform_negatives(num_negatives, self.num_items)
            negatives = self.candidate_embedding(negative_ids, training=training)
            count = None
            if self.config.logq_correction:
                count = losses.mixture_expected_count(
                    tf.gather(self.sampling_probability, tf.concat([target, negative_ids], axis=0)),
                    tf.shape(target)[0],
                    num_negatives,
                    self.num_items,
                )
            return losses.mixed_negatives_loss(
                queries, candidates, target, negatives, negative_ids, temperature, count, sequence
            )
        probability = tf.gather(self.sampling_probability, target) if self.config.logq_correction else None
        return tf.reduce_mean(
            self.task(
                queries,
                candidates,
                candidate_sampling_probability=probability,
                candidate_ids=target,
                compute_metrics=False,
                compute_batch_metrics=False,
            )
        )

    def item_embeddings(self):
        """[num_items, D] candidate embeddings of the whole vocabulary, row = item index."""
        return self.candidate_embedding(tf.range(self.num_items, dtype=tf.int64)).numpy()
