"""Serialises tf.train.Example records directly in the protobuf wire format.

Building `tf.train.Example` messages costs about 25 us each in Python and imports TensorFlow on
every Beam worker; the features job writes tens of millions of examples. The messages here are
simple (int64 and float lists only), so they are assembled from byte strings instead: the scalar
helpers below for single entries, and NumPy for many (`varints` encodes a whole array; an entry's
header depends only on its key and payload length, so a `LengthTable` looks headers up by length,
and examples.py gathers whole blocks of records from those pieces at once). Tests check the bytes
against TensorFlow's own parser.

Wire format used (all length-delimited fields):
  Example  { Features features = 1 }
  Features { map<string, Feature> feature = 1 }      map entry: { string key = 1; Feature value = 2 }
  Feature  { FloatList float_list = 2; Int64List int64_list = 3 }
  Int64List/FloatList { repeated value = 1 [packed] }
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import google_crc32c
import numpy as np

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


def signed_varint(value: int) -> bytes:
    """An int64 as protobuf encodes it: a negative value is its two's complement, ten bytes (gaps use -1)."""
    return varint(value) if value >= 0 else _encode_varint(value & 0xFFFFFFFFFFFFFFFF)


def packed_signed_varints(values: Iterable[int]) -> list[bytes]:
    """packed_varints for int64 values that may be negative."""
    return [signed_varint(v) for v in values]


_UINT64_THRESHOLDS = [np.uint64(1 << (7 * k)) for k in range(1, 10)]


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every value's int64 varint (a negative one as its ten-byte two's complement), concatenated, as uint8, with
    the offsets (len(values) + 1) of each value's bytes: values[a:b] encode to out[offsets[a]:offsets[b]]."""
    v = np.asarray(values, dtype=np.int64).view(np.uint64)
    sizes = np.ones(len(v), np.int64)
    for threshold in _UINT64_THRESHOLDS:
        above = v >= threshold
        if not above.any():
            break
        sizes += above
    offsets = np.zeros(len(v) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint8)
    if len(v) and int(sizes.max()) == 1:
        out[:] = v
        return out, offsets
    starts = offsets[:-1]
    for k in range(int(sizes.max(initial=0))):
        has = np.flatnonzero(sizes > k)
        group = (v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (sizes[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + k] = (group | more).astype(np.uint8)
    return out, offsets


class LengthTable:
    """Byte strings that depend only on a length n (an entry's header before its n-byte payload, an Example's
    before its n bytes of entries), for every n up to a bound, as one uint8 array with offsets: arrays of
    lengths then map to arrays of (offset, size) with one lookup. Grown on demand, doubling."""

    def __init__(self, make: Callable[[int], bytes]):
        self._make = make
        self.data = np.zeros(0, np.uint8)
        self.offsets = np.zeros(1, np.int64)

    def ensure(self, max_len: int) -> None:
        """Room for lengths up to `max_len`."""
        have = len(self.offsets) - 1
        if max_len < have:
            return
        made = [self._make(n) for n in range(have, max(max_len + 1, 2 * have, 256))]
        self.data = np.concatenate([self.data, np.frombuffer(b"".join(made), np.uint8)])
        self.offsets = np.concatenate([self.offsets, self.offsets[-1] + np.cumsum([len(m) for m in made])])


def example_prefix(n: int) -> bytes:
    """What precedes n bytes of map entries in a serialised Example: example(entries) == example_prefix(n) + entries."""
    return b"\x0a" + varint(n)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


class Int64ListKey:
    """Encodes Features map entries holding an Int64List under one key.

    The entry is nested three deep (map entry > Feature > Int64List), so the lengths are worked
    out first and the entry is built with one join; this is the hot path of the features job.
    """

    def __init__(self, key: str):
        encoded = key.encode()
        self._key_part = b"\x0a" + varint(len(encoded)) + encoded + b"\x12"
        self._key_len = len(self._key_part)

    def entry(self, packed: bytes) -> bytes:
        """The map entry of this key for an already varint-packed int64 list (`packed`), as tf.train.Example encodes
        it."""
        n = len(packed)
        if n == 0:
            return _entry_body(self._key_part + b"\x02\x1a\x00")
        if n > _VARINT_CACHE_SIZE // 2:
            feature = _length_delimited(b"\x1a", _length_delimited(b"\x0a", packed))
            return _entry_body(self._key_part + varint(len(feature)) + feature)
        # every length below fits the varint cache, so the lookups are plain list indexing
        v_n = _VARINTS[n]
        list_len = 1 + len(v_n) + n
        v_list = _VARINTS[list_len]
        feature_len = 1 + len(v_list) + list_len
        v_feature = _VARINTS[feature_len]
        body_len = self._key_len + len(v_feature) + feature_len
        return b"".join((b"\x0a", _VARINTS[body_len], self._key_part, v_feature, b"\x1a", v_list, b"\x0a", v_n, packed))

    def scalar(self, value: int) -> bytes:
        """The map entry of this key holding one int64."""
        return self.entry(signed_varint(value))

    def header(self, n: int) -> bytes:
        """What precedes a packed payload of n bytes: entry(payload) == header(len(payload)) + payload."""
        entry = self.entry(bytes(n))
        return entry[: len(entry) - n]


def _entry_body(body: bytes) -> bytes:
    return b"\x0a" + varint(len(body)) + body


def float_entry(key: str, value: float) -> bytes:
    """The Features map entry of `key` holding one float32, as tf.train.Example encodes it."""
    float_list = _length_delimited(b"\x0a", struct.pack("<f", value))
    feature = _length_delimited(b"\x12", float_list)
    return _entry_body(_length_delimited(b"\x0a", key.encode()) + _length_delimited(b"\x12", feature))


def example(*entries: bytes) -> bytes:
    """A serialised tf.train.Example from map entries made by the functions above."""
    body = b"".join(entries)
    return b"\x0a" + varint(len(body)) + body


def _masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """One record in the TFRecord container format: length, its masked CRC32C, data, data CRC."""
    length = _LENGTH.pack(len(record))
    return b"".join((length, _CRC.pack(_masked_crc32c(length)), record, _CRC.pack(_masked_crc32c(record))))


def frame_head(n: int) -> bytes:
    """The 12 bytes that precede an n-byte record in a TFRecord file (its length and the length's masked CRC)."""
    length = _LENGTH.pack(n)
    return length + _CRC.pack(_masked_crc32c(length))


def masked_crc32c_bytes(records: list[bytes]) -> np.ndarray:
    """Each record's masked CRC32C as the four little-endian bytes that follow it in a TFRecord file, shape (n, 4)."""
    crc = np.fromiter(map(google_crc32c.value, records), np.uint64, len(records))
    masked = (((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(0xA282EAD8)) & np.uint64(0xFFFFFFFF)
    return masked.astype("<u4").view(np.uint8).reshape(-1, 4)


def records(framed: bytes) -> list[bytes]:
    """The records of TFRecord-framed bytes, in order (the CRCs are not checked: count_frames does that)."""
    out, offset = [], 0
    while offset < len(framed):
        (length,) = _LENGTH.unpack_from(framed, offset)
        out.append(framed[offset + 12 : offset + 12 + length])
        offset += 16 + length
    return out


def count_frames(path: str) -> int:
    """The number of records in a TFRecord file, after checking both CRCs of every one.

    Raises ValueError("corrupted record at <offset>") (or "truncated ...") on a damaged file: a flipped bit
    breaks a CRC. Plain Python counts a shard about seven times faster than a tf.data reduce does."""
    count = offset = 0
    with open(path, "rb", buffering=1 << 20) as handle:
        while header := handle.read(12):
            if len(header) < 12:
                raise ValueError(f"truncated record at {offset}")
            (length,), (length_crc,) = _LENGTH.unpack_from(header), _CRC.unpack_from(header, 8)
            if _masked_crc32c(header[:8]) != length_crc:
                raise ValueError(f"corrupted record at {offset}")
            body = handle.read(length + 4)
            if len(body) < length + 4:
                raise ValueError(f"truncated record at {offset}")
            if _masked_crc32c(body[:length]) != _CRC.unpack_from(body, length)[0]:
                raise ValueError(f"corrupted record at {offset}")
            offset += 16 + length
            count += 1
    return count


_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
