"""Bootstrap confidence intervals over test users for the gate's metric.

The gate compares means over a few thousand users; a difference of 0.004 in NDCG@20 can be noise. Resampling
users (the same resampled users for every model, so differences are paired) gives each model's interval and the
interval of the candidate's difference with each reference: a difference is significant when that interval
excludes 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
CHUNK = 50


@dataclasses.dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    confidence: float

    def to_json(self) -> dict:
        """The interval as the summary's JSON (its fields by name)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclasses.dataclass(frozen=True)
class Difference:
    against: str
    interval: Interval  # candidate minus reference

    @property
    def significant(self) -> bool:
        """True when the 95% interval of the difference excludes 0, in either direction."""
        return self.interval.low > 0 or self.interval.high < 0

    def to_json(self) -> dict:
        """The difference as the summary's JSON: the model it is against, its interval and whether it is significant."""
        return {"against": self.against, **self.interval.to_json(), "significant": self.significant}


def _interval(samples: np.ndarray, mean: float, confidence: float) -> Interval:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(mean), float(low), float(high), confidence)


def paired_intervals(
    per_user: dict[str, np.ndarray],
    candidate: str,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[dict[str, Interval], dict[str, Difference]]:
    """Percentile intervals of each model's mean, and of `candidate` minus each other model, over `resamples`
    resamples of the users (rows of every array, which must be the same users in the same order)."""
    sizes = {len(v) for v in per_user.values()}
    if len(sizes) != 1:
        raise ValueError(f"per-user arrays must cover the same users, got lengths {sorted(sizes)}")
    if candidate not in per_user:
        raise ValueError(f"candidate {candidate!r} is not among {sorted(per_user)}")
    if resamples < 100 or not 0 < confidence < 1:
        raise ValueError(f"need at least 100 resamples and a confidence in (0, 1), got {resamples}, {confidence}")
    (users,) = sizes
    if users == 0:
        raise ValueError("no test users to resample")
    rng = np.random.default_rng(seed)
    names = list(per_user)
    values = np.stack([np.asarray(per_user[n], np.float64) for n in names], axis=1)  # [U, models]
    chunks = []
    for start in range(0, resamples, CHUNK):  # [chunk, U] resample counts: bounded memory on large splits
        counts = rng.multinomial(users, np.full(users, 1 / users), size=min(CHUNK, resamples - start))
        chunks.append(counts.astype(np.float64) @ values / users)
    means = dict(zip(names, np.concatenate(chunks).T))
    intervals = {name: _interval(means[name], float(np.mean(per_user[name])), confidence) for name in per_user}
    differences = {
        name: Difference(
            name,
            _interval(
                means[candidate] - means[name],
                float(np.mean(per_user[candidate]) - np.mean(per_user[name])),
                confidence,
            ),
        )
        for name in per_user
        if name != candidate
    }
    return intervals, differences
