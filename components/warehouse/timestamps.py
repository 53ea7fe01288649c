"""The one check of event times read from files: inside [1990-01-01, now + 1 day], or refused by row.

Why: a file in milliseconds or microseconds read as seconds overflows int64 microseconds and wraps to a
date thousands of years away, silently. Every loader (Amazon, Taobao, a plain events file) converts and
checks through here, before any arithmetic, and names the first bad row, its value and the unit it
looks like, so the user can fix the file instead of training on the year 152252 BC.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

EARLIEST = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
SLACK = dt.timedelta(days=1)  # clocks of shops and warehouses disagree by hours, not days
_UNITS = (("milliseconds", 10**3), ("microseconds", 10**6), ("nanoseconds", 10**9))


class TimestampError(ValueError):
    """Event times outside the sane range: names the source, the first bad row and its value."""


def _bounds_s(now: dt.datetime | None) -> tuple[int, int]:
    latest = (now or dt.datetime.now(dt.timezone.utc)) + SLACK
    return int(EARLIEST.timestamp()), int(latest.timestamp())


def _refuse(where: str, bad: np.ndarray, shown: str, high_s: int) -> None:
    latest = dt.datetime.fromtimestamp(high_s, dt.timezone.utc)
    raise TimestampError(
        f"{where}: {int(bad.sum())} timestamp(s) outside {EARLIEST:%Y-%m-%d} .. "
        f"{latest:%Y-%m-%d %H:%M} UTC; first at row {int(np.argmax(bad)) + 1}: {shown}"
    )


def from_unix_seconds(
    seconds: pa.ChunkedArray | pa.Array | np.ndarray, where: str, now: dt.datetime | None = None
) -> pa.Array:
    """Unix seconds (integers, or floats with a fraction) -> timestamp[us, UTC], after the range check (rows count
    from 1, in file order)."""
    values = np.asarray(seconds.to_numpy() if hasattr(seconds, "to_numpy") else seconds)
    values = values.astype(np.float64 if values.dtype.kind == "f" else np.int64)
    low, high = _bounds_s(now)
    bad = (values < low) | (values > high)
    if bad.any():
        value = values[np.argmax(bad)]
        unit = next(
            (
                f"; it reads as {name}: {dt.datetime.fromtimestamp(value // per, dt.timezone.utc):%Y-%m-%d}"
                for name, per in _UNITS
                if low <= value // per <= high
            ),
            "",
        )
        shown = int(value) if float(value).is_integer() else float(value)
        _refuse(where, bad, f"{shown} unix seconds{unit}", high)
    micros = np.round(values * 1e6).astype(np.int64) if values.dtype.kind == "f" else values * 1_000_000
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


def check_timestamps(timestamps: pa.ChunkedArray | pa.Array, where: str, now: dt.datetime | None = None) -> None:
    """The same range check for times already parsed (ISO-8601 strings, Parquet timestamps)."""
    array = timestamps if isinstance(timestamps, pa.ChunkedArray) else pa.chunked_array([timestamps])
    micros = array.cast(pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64()).to_numpy()
    low, high = _bounds_s(now)
    bad = (micros < low * 1_000_000) | (micros > high * 1_000_000)
    if bad.any():
        _refuse(where, bad, str(array[int(np.argmax(bad))]), high)
