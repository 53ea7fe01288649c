"""A/B bucketing: a user's arm is a pure function of (experiment, user_id, ratio).

Shared beside the schema because three stages must agree on it: export writes each list's variant, serving
answers a request with its arm's model, and experiments' A/B analysis recomputes the arm in SQL.

The bucket is the first 56 bits of SHA-256("<experiment>:<user_id>") scaled to [0, 1). SHA-256 is the same on
every machine and process (Python's hash() is salted per process), the experiment name salts it so two
experiments split users independently, and a user is in treatment iff bucket < ratio, so raising the ratio
only moves control users into treatment. 56 bits fit a signed INT64, so BigQuery can recompute the bucket as
CAST(CONCAT('0x', SUBSTR(TO_HEX(SHA256(CONCAT(experiment, ':', user_id))), 1, 14)) AS INT64) / POW(2, 56).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

CONTROL = "control"
TREATMENT = "treatment"
VARIANTS = (CONTROL, TREATMENT)
_BUCKET_BITS = 56
_HEX_DIGITS = _BUCKET_BITS // 4


def _check(experiment: str, ratio: float) -> None:
    if not isinstance(experiment, str) or not experiment:
        raise ValueError(f"experiment must be a non-empty string, got {experiment!r}")
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"treatment ratio must be in [0, 1], got {ratio!r}")


def bucket(user_id: str, experiment: str) -> float:
    """The user's position in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).hexdigest()
    return int(digest[:_HEX_DIGITS], 16) / float(1 << _BUCKET_BITS)


def buckets(user_ids: Iterable[str], experiment: str) -> np.ndarray:
    """bucket() for many users at once, float64 array in input order."""
    _check(experiment, 0.0)
    prefix = f"{experiment}:".encode()
    scale = float(1 << _BUCKET_BITS)
    values = [
        int(hashlib.sha256(prefix + str(uid).encode("utf-8")).hexdigest()[:_HEX_DIGITS], 16) / scale for uid in user_ids
    ]
    return np.asarray(values, dtype=np.float64)


def assign(user_id: str, experiment: str, ratio: float) -> str:
    """ "treatment" for a `ratio` share of users, "control" for the rest; stable across runs and machines."""
    _check(experiment, ratio)
    if user_id is None or user_id == "":
        raise ValueError("user_id must be a non-empty string")
    return TREATMENT if bucket(user_id, experiment) < ratio else CONTROL


def assign_many(user_ids: Iterable[str], experiment: str, ratio: float) -> np.ndarray:
    """assign() for many users: an object array of "control"/"treatment" in input order."""
    _check(experiment, ratio)
    ids = list(user_ids)
    bad = [i for i, uid in enumerate(ids) if uid is None or uid == ""]
    if bad:
        raise ValueError(f"{len(bad)} empty or null user_id(s), first at position {bad[0]}")
    return np.where(buckets(ids, experiment) < ratio, TREATMENT, CONTROL).astype(object)
