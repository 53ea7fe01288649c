"""The train split's records rewritten as Beam might have written them instead: the trainers' streams must not
depend on which shard holds a user."""

from pathlib import Path

import tensorflow as tf

from components import schema


def reshard_by_user_parity(features_dir: Path, kind: str) -> None:
    """Rewrites `kind`'s one train shard as two: odd users in shard 0, even ones in shard 1, newest user first."""
    train = features_dir / kind / "train-00000-of-00001.tfrecord"
    records = list(tf.data.TFRecordDataset([str(train)]).as_numpy_iterator())
    users = [tf.train.Example.FromString(r).features.feature[schema.USER].int64_list.value[0] for r in records]
    train.unlink()
    for shard in range(2):
        with tf.io.TFRecordWriter(str(features_dir / kind / f"train-{shard:05d}-of-00002.tfrecord")) as out:
            for user in sorted({u for u in users if u % 2 != shard}, reverse=True):
                for record, owner in zip(records, users, strict=True):
                    if owner == user:
                        out.write(record)
