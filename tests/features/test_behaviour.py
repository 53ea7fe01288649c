"""The gap buckets every model that reads gaps shares."""

import tensorflow as tf

from components import schema
from components.features.behaviour import NUM_GAP_BUCKETS, gap_buckets


def test_gap_buckets_are_log2_of_seconds_with_no_gap_and_zero_apart():
    seconds = [schema.NO_GAP, -7, 0, 1, 2, 3, 4, 59, 60, 3_600, 86_400, 30 * 86_400, 2**40]
    assert gap_buckets(tf.constant(seconds, tf.int64)).numpy().tolist() == [0, 0, 1, 2, 3, 3, 4, 7, 7, 13, 18, 23, 31]
    assert gap_buckets(tf.constant([[2**40, 1]], tf.int64)).numpy().tolist() == [[NUM_GAP_BUCKETS - 1, 2]]
