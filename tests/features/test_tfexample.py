"""The hand-rolled wire format must be exactly what TensorFlow parses."""

import pytest
import tensorflow as tf

from components.features import tfexample as tfx


def _reference(features: dict) -> tf.train.Example:
    feature = {}
    for key, value in features.items():
        if isinstance(value, float):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=value))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def test_encoded_example_parses_like_a_protobuf_built_one():
    big = [0, 1, 127, 128, 16383, 16384, 65535, 65536, 2**31 + 5, 2**40]
    record = tfx.example(
        tfx.Int64ListKey("hist").entry(b"".join(tfx.packed_varints(big))),
        tfx.Int64ListKey("empty").entry(b""),
        tfx.Int64ListKey("user").scalar(300),
        tfx.float_entry("label", 1.0),
    )
    parsed = tf.train.Example.FromString(record)
    expected = _reference({"hist": big, "empty": [], "user": [300], "label": 1.0})
    assert parsed == expected


def test_tfrecord_frames_are_read_by_tf_data(tmp_path):
    records = [tfx.example(tfx.Int64ListKey("x").scalar(i)) for i in range(3)] + [b""]
    path = tmp_path / "r.tfrecord"
    path.write_bytes(b"".join(tfx.tfrecord_frame(r) for r in records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records


def test_signed_values_parse_as_tensorflow_writes_them():
    values = [-1, 0, 5, -(2**40), 2**62]
    record = tfx.example(
        tfx.Int64ListKey("gaps").entry(b"".join(tfx.packed_signed_varints(values))),
        tfx.Int64ListKey("gap").scalar(-1),
    )
    assert tf.train.Example.FromString(record) == _reference({"gaps": values, "gap": [-1]})


def test_varint_rejects_negative_values():
    import pytest

    with pytest.raises(ValueError, match="non-negative"):
        tfx.varint(-1)


def test_long_lists_take_the_general_path():
    values = list(range(100_000, 140_000))  # packed length > 65536 / 2
    record = tfx.example(tfx.Int64ListKey("long").entry(b"".join(tfx.packed_varints(values))))
    assert tf.train.Example.FromString(record) == _reference({"long": values})


def test_count_frames_checks_both_crcs(tmp_path):
    path = tmp_path / "r.tfrecord"
    records = [b"a" * 10, b"", b"xyz"]
    data = b"".join(tfx.tfrecord_frame(r) for r in records)
    path.write_bytes(data)
    assert tfx.count_frames(str(path)) == 3
    for position, what in (
        (3, "corrupted record at 0"),
        (16 + 10 + 2, "corrupted record at 26"),
        (len(data) - 5, "corrupted record at 42"),
    ):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=what):
            tfx.count_frames(str(path))
    path.write_bytes(data[:-2])
    with pytest.raises(ValueError, match="truncated record at 42"):
        tfx.count_frames(str(path))
