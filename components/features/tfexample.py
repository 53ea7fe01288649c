"""Serialises tf.train.Example records directly in the protobuf wire format.

Building `tf.train.Example` messages costs about 25 us each in Python and imports TensorFlow on
every Beam worker; the features job writes tens of millions of examples. The messages here are
simple (int64 and float lists only), so they are assembled from byte strings instead. A
user's history for example t is then a slice of one pre-encoded byte string per sequence, which
makes an example cost a handful of concatenations. Tests check the bytes against TensorFlow's
own parser.

Wire format used (all length-delimited fields):
  Example  { Features features = 1 }
  Features { map<string, Feature> feature = 1 }      map entry: { string key = 1; Feature value = 2 }
  Feature  { FloatList float_list = 2; Int64List int64_list = 3 }
  Int64List/FloatList { repeated value = 1 [packed] }
"""
from __future__ import annotations

import struct
from collections.abc import Iterable

import google_crc32c

_VARINT_CACHE_SIZE = 1 << 16


def _encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"only non-negative integers are encoded here, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINTS = [_encode_varint(v) for v in range(_VARINT_CACHE_SIZE)]


def varint(value: int) -> bytes:
    """The base-128 varint of a non-negative int (vocabulary indices and lengths)."""
    return _VARINTS[value] if 0 <= value < _VARINT_CACHE_SIZE else _encode_varint(value)


def packed_varints(values: Iterable[int]) -> list[bytes]:
    """Each value's varint, so that a run of values is the concatenation of a slice."""
    return [varint(v) for v in values]


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def int64_list_entry(key: str, packed: bytes) -> bytes:
    """One Features map entry holding an Int64List whose packed varints are `packed`."""
    int64_list = _length_delimited(b"\x0a", packed) if packed else b""
    feature = _length_delimited(b"\x1a", int64_list)
    return _entry(key, feature)


def int64_entry(key: str, value: int) -> bytes:
    return int64_list_entry(key, varint(value))


def float_entry(key: str, value: float) -> bytes:
    float_list = _length_delimited(b"\x0a", struct.pack("<f", value))
    return _entry(key, _length_delimited(b"\x12", float_list))


def _entry(key: str, feature: bytes) -> bytes:
    body = _length_delimited(b"\x0a", key.encode()) + _length_delimited(b"\x12", feature)
    return _length_delimited(b"\x0a", body)


def example(*entries: bytes) -> bytes:
    """A serialised tf.train.Example from map entries made by the functions above."""
    return _length_delimited(b"\x0a", b"".join(entries))


def _masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """One record in the TFRecord container format: length, its masked CRC32C, data, data CRC."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc32c(length)) + record + struct.pack("<I", _masked_crc32c(record))
