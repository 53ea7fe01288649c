"""The softmax losses beside the in-batch task of model.retrieval_task, as plain functions of embeddings.

in-batch (model.retrieval_task): each query's negatives are the batch's other targets, which come
    from the popularity distribution, hence the logQ correction.
full_softmax: each query scores every real item (PAD and OOV are no candidates); nothing is
    sampled, so nothing is corrected.
mixed: the batch's targets plus items drawn uniformly from the catalogue, shared by all rows
    (Yang et al. 2020). Uniform negatives reach the long tail that in-batch negatives rarely hold.
    The logQ correction is that of the mixture that drew the candidates: an item's expected count
    among them, B * p(item) + S / V (B rows whose targets come from the popularity p, S uniform
    draws over V items), on both parts. A per-draw log p(item) on the in-batch part alone adds
    about +9 to those logits on Beauty and none to the uniform ones, which then weigh nothing: that
    variant trained to the in-batch loss's figures to three decimals.
Accidental hits, a negative that is the row's own positive item, are no negatives in either.
Trained at every position, the in-batch part also leaves out the other steps of the row's own
sequence: they are the items that user bought before and after, the ones most like the query, and
as negatives they teach the model to push a user's own future items away (sequence_ids).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from components import schema

_NO_CANDIDATE = -1e9  # the logit of a column that is no candidate of its row (its softmax weight is 0)


def full_softmax_loss(queries, item_embeddings, targets, temperature: float):
    """Mean cross-entropy of each target against all real items.

    queries [N, D], item_embeddings [num_items, D] (row = vocabulary index), targets [N] item indices.
    """
    logits = tf.matmul(queries, item_embeddings[schema.NUM_RESERVED :], transpose_b=True) / temperature
    labels = tf.cast(targets, tf.int64) - schema.NUM_RESERVED
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def uniform_negatives(count: int, num_items: int):
    """`count` item indices drawn uniformly (with replacement) from the real items, never PAD or OOV."""
    return tf.random.uniform([count], schema.NUM_RESERVED, num_items, dtype=tf.int64)


def mixture_expected_count(probability, num_rows, num_negatives: int, num_items: int):
    """Expected count of each item among B = num_rows in-batch targets drawn from `probability` and
    num_negatives uniform draws over the num_items - NUM_RESERVED real items."""
    uniform = num_negatives / (num_items - schema.NUM_RESERVED)
    return tf.cast(num_rows, probability.dtype) * probability + uniform


def mixed_negatives_loss(
    queries,
    candidates,
    candidate_ids,
    negatives,
    negative_ids,
    temperature: float,
    expected_count=None,
    sequence_ids=None,
):
    """Mean cross-entropy of row i's positive (candidates[i]) against the other rows' positives and the
    shared uniform negatives.

    queries, candidates [N, D]; candidate_ids [N]; negatives [S, D] (S may be 0); negative_ids [S];
    expected_count [N + S], the logQ correction of each column (in-batch ones first;
    mixture_expected_count), or None; sequence_ids [N], the user sequence each row is a step of
    (every_position), or None: another row of the same sequence is no negative.
    """
    in_batch = tf.matmul(queries, candidates, transpose_b=True) / temperature
    if sequence_ids is not None:
        same = tf.equal(sequence_ids[:, tf.newaxis], sequence_ids[tf.newaxis, :])
        other_step = tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(queries)[0], dtype=tf.bool)))
        in_batch = tf.where(other_step, tf.constant(_NO_CANDIDATE, in_batch.dtype), in_batch)
    sampled = tf.matmul(queries, negatives, transpose_b=True) / temperature
    logits = tf.concat([in_batch, sampled], axis=1)
    if expected_count is not None:
        # not tfrs' SamplingProbablityCorrection: it clips at 1, and an expected count may exceed 1
        logits = logits - tf.math.log(expected_count)[tf.newaxis]
    rows = tf.shape(queries)[0]
    labels = tf.concat([tf.eye(rows), tf.zeros([rows, tf.shape(negatives)[0]])], axis=1)
    ids = tf.concat([tf.cast(candidate_ids, tf.int64), tf.cast(negative_ids, tf.int64)], axis=0)
    logits = tfrs.layers.loss.RemoveAccidentalHits()(labels, logits, ids)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits))
