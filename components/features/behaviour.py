"""The gap features' buckets, shared by the models that read hist_gaps and target_gap (schema.py).

A gap is a count of seconds spanning a second to years, so the models see its log2 bucket: bucket 0 is NO_GAP (no
earlier step, or a gap the caller does not know), 1 a zero gap (the same second; on data at day resolution, the same
day), then 2 + floor(log2(seconds)), capped: a minute is bucket 7, an hour 13, a day 18, a month 23. Computed in
TensorFlow so that the bucketing travels inside a SavedModel and serving passes raw seconds.
"""

from __future__ import annotations

import tensorflow as tf

NUM_GAP_BUCKETS = 32
# Bucket b >= 2 holds [2 ** (b - 2), 2 ** (b - 1)) seconds; the last one everything from 2 ** 29 s (17 years) on.
_LOWER_BOUNDS = [0] + [2**k for k in range(NUM_GAP_BUCKETS - 2)]


def gap_buckets(seconds: tf.Tensor) -> tf.Tensor:
    """int64 buckets, in [0, NUM_GAP_BUCKETS), of int64 gaps in seconds of any shape (negative: NO_GAP, bucket 0)."""
    seconds = tf.convert_to_tensor(seconds, tf.int64)
    flat = tf.reshape(seconds, [1, -1])
    # searchsorted needs a sorted row per input row: the bounds once, the gaps as one row
    bucket = tf.searchsorted(tf.constant([_LOWER_BOUNDS], tf.int64), flat, side="right", out_type=tf.int64)
    return tf.reshape(bucket, tf.shape(seconds))
