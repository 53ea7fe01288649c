"""Per-user sequence logic, free of Beam so it can be tested and reasoned about on its own.

A user's events arrive as compact NumPy records (item as its row in the sorted catalogue, event
type as its index in schema.EVENT_TYPES). They are ordered by (event_ts, event_seq), consecutive
events on the same item collapse into one step whose flags remember every event type in it, and a
split function picks which steps are the targets of which split.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable

import numpy as np

from components import schema

EVENT_DTYPE = np.dtype([("ts", "<i8"), ("seq", "<i8"), ("item", "<i4"), ("type", "u1")])
STEP_DTYPE = np.dtype([("item", "<i4"), ("flags", "u1"), ("ts", "<i8")])
# Sorting on every field makes the order total, so equal (ts, seq) pairs cannot reorder between runs.
_EVENT_ORDER = ["ts", "seq", "item", "type"]

MIN_STEPS = 3  # test target, valid target and at least one step of history
TIME_SPLIT_MIN_STEPS = 2  # one target and one step of history: the time split counts every user active in a window


def event_flag(event_type: str) -> int:
    """The bit that marks a step as containing `event_type`."""
    return 1 << schema.EVENT_TYPES.index(event_type)


VIEW = event_flag("view")
PURCHASE = event_flag("purchase")


def collapse_repeats(events: np.ndarray) -> np.ndarray:
    """Steps: runs of consecutive events on the same item, with the OR of their event-type flags.

    A step's timestamp is that of its first event.
    """
    if len(events) == 0:
        return np.empty(0, STEP_DTYPE)
    items = events["item"]
    starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]])
    steps = np.empty(len(starts), STEP_DTYPE)
    steps["item"] = items[starts]
    steps["ts"] = events["ts"][starts]
    flags = np.left_shift(np.uint8(1), events["type"]).astype(np.uint8)
    steps["flags"] = np.bitwise_or.reduceat(flags, starts)
    return steps


# ---------------------------------------------------------------------------------------------
# Blocks: the features job handles users a block at a time (a few hundred users, found by a hash of the id), so
# that sorting, collapsing and counting cost a few NumPy calls per block instead of per user.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class UserBlock:
    """Several users' rows (EVENT_DTYPE events or STEP_DTYPE steps) end to end, users sorted by id: user k's rows
    are rows[starts[k]:starts[k + 1]], in time order."""

    users: list[str]
    starts: np.ndarray  # int64, len(users) + 1
    rows: np.ndarray

    @classmethod
    def of(cls, members: Iterable[tuple[str, np.ndarray]]) -> UserBlock:
        """A block of (user_id, rows) pairs (each user once, rows in order), sorted by user id."""
        members = sorted(members, key=lambda member: member[0])
        sizes = np.array([len(rows) for _, rows in members], np.int64)
        rows = np.concatenate([rows for _, rows in members]) if members else np.empty(0, STEP_DTYPE)
        return cls([user for user, _ in members], np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), rows)

    @property
    def sizes(self) -> np.ndarray:
        """Each user's number of rows."""
        return np.diff(self.starts)

    def members(self) -> list[tuple[str, np.ndarray]]:
        """(user_id, that user's rows) per user, in id order."""
        bounds = self.starts.tolist()
        return [(user, self.rows[a:b]) for user, a, b in zip(self.users, bounds[:-1], bounds[1:])]

    def __len__(self) -> int:
        return len(self.users)


def block_events(parts: Iterable[tuple[list[str], np.ndarray, np.ndarray]]) -> UserBlock:
    """One block's events from any number of partial batches, each (user ids, events per user, events grouped by
    user in that order), as a UserBlock: users sorted by id, each user's events in time order (ties: seq, item, type)."""
    parts = list(parts)
    user_ids = [user for users, _, _ in parts for user in users]
    counts = np.concatenate([np.asarray(c, np.int64) for _, c, _ in parts]) if parts else np.zeros(0, np.int64)
    events = np.concatenate([e for _, _, e in parts]) if parts else np.empty(0, EVENT_DTYPE)
    users = sorted(set(user_ids))
    rank = {user: k for k, user in enumerate(users)}
    user_of_event = np.repeat(np.fromiter(map(rank.__getitem__, user_ids), np.int64, len(user_ids)), counts)
    order = np.lexsort(tuple(events[name] for name in reversed(_EVENT_ORDER)) + (user_of_event,))
    starts = np.concatenate([[0], np.cumsum(np.bincount(user_of_event, minlength=len(users)))]).astype(np.int64)
    return UserBlock(users, starts, events[order])


def collapse_block(events: UserBlock, min_steps: int) -> tuple[UserBlock, dict[str, int]]:
    """collapse_repeats for every user of a block of events, and the users with fewer than `min_steps` steps left
    out; returns the block of steps and the counts (users and events read, kept and dropped)."""
    sizes = events.sizes
    user = np.repeat(np.arange(len(sizes)), sizes)
    items = events.rows["item"]
    first = np.flatnonzero(np.r_[True, (items[1:] != items[:-1]) | (user[1:] != user[:-1])]) if len(items) else []
    steps = np.empty(len(first), STEP_DTYPE)
    steps["item"] = items[first]
    steps["ts"] = events.rows["ts"][first]
    flags = np.left_shift(np.uint8(1), events.rows["type"]).astype(np.uint8)
    steps["flags"] = np.bitwise_or.reduceat(flags, first) if len(first) else flags[:0]
    step_counts = np.bincount(user[first], minlength=len(sizes))
    keep = step_counts >= min_steps
    kept_steps = steps[np.repeat(keep, step_counts)]
    kept_counts = step_counts[keep]
    counts = {
        "users_read": len(sizes),
        "users": int(keep.sum()),
        "events": int(sizes[keep].sum()),
        "steps": int(kept_counts.sum()),
        "dropped_users/too_few_steps": int((~keep).sum()),
        "dropped_events/user_too_few_steps": int(sizes[~keep].sum()),
    }
    users = [u for u, k in zip(events.users, keep.tolist()) if k]
    starts = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int64)
    return UserBlock(users, starts, kept_steps), counts


def chunk_bounds(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive runs [first, stop) of users whose sizes add up to at most `limit`; a user larger than that is a
    run of its own."""
    out, start, sizes = [], 0, [int(n) for n in sizes]
    while start < len(sizes):
        stop, total = start, 0
        while stop < len(sizes) and (stop == start or total + sizes[stop] <= limit):
            total += sizes[stop]
            stop += 1
        out.append((start, stop))
        start = stop
    return out


# ---------------------------------------------------------------------------------------------
# Splits: a split function maps a user's steps to the target positions of each split. Every
# position is >= 1, so every example has at least one step of history.
# ---------------------------------------------------------------------------------------------
SplitFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def leave_last_out(steps: np.ndarray) -> dict[str, np.ndarray]:
    """Test = last step, valid = second to last, train = every earlier step from the second on."""
    n = len(steps)
    if n < MIN_STEPS:
        raise ValueError(f"leave-last-out needs at least {MIN_STEPS} steps, got {n}")
    return {
        "train": np.arange(1, n - 2),
        "valid": np.array([n - 2]),
        "test": np.array([n - 1]),
    }


@dataclasses.dataclass(frozen=True)
class TimeSplit:
    """Train = steps before `cut_us`, valid = [cut, cut + window), test = [cut + window, cut + 2 window);
    later steps are history of nothing. Times are event_ts in microseconds (a step's time is its first
    event's). Unlike leave-last-out, valid and test hold every step of a window, so a cvr label (bought
    later in the same split) can be 1 there even when a purchase is a step of its own, as on Taobao."""

    cut_us: int
    window_us: int

    def __post_init__(self):
        if self.window_us <= 0:
            raise ValueError(f"the time split's window must be positive, got {self.window_us} us")

    def __call__(self, steps: np.ndarray) -> dict[str, np.ndarray]:
        ts = steps["ts"][1:]  # position 0 has no history: never a target
        bounds = np.searchsorted(ts, [self.cut_us, self.cut_us + self.window_us, self.cut_us + 2 * self.window_us])
        positions = np.arange(1, len(steps))
        return {
            "train": positions[: bounds[0]],
            "valid": positions[bounds[0] : bounds[1]],
            "test": positions[bounds[1] : bounds[2]],
        }


SPLITS = ("leave_last_out", "time")


def min_steps(name: str) -> int:
    """The fewest steps a user needs to take part in the named split.

    Leave-last-out needs a test target, a valid target and a step of history; the time split needs one step of
    history before any target, so a user whose only two steps are in the test window (no train event at all)
    still counts there."""
    return TIME_SPLIT_MIN_STEPS if name == "time" else MIN_STEPS


CAPPED = "capped"  # the train targets a cap left out, when there are any


def split_fn(
    name: str, max_train_per_user: int = 0, cut_us: int | None = None, window_us: int | None = None
) -> SplitFn:
    """The named split ("time" needs `cut_us` and `window_us`), keeping at most `max_train_per_user` train
    targets per user, the most recent ones (0: no cap). Why: one user with 100,000 events would otherwise be
    most of the training set. The targets left out are listed under CAPPED, so that the features job can count them."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {sorted(SPLITS)}")
    if max_train_per_user < 0:
        raise ValueError(f"max_train_per_user must be >= 0 (0: no cap), got {max_train_per_user}")
    if name == "leave_last_out":
        split = leave_last_out
    elif cut_us is None or window_us is None:
        raise ValueError("the time split needs a cut and a window")
    else:
        split = TimeSplit(int(cut_us), int(window_us))
    if not max_train_per_user:
        return split

    def capped(steps: np.ndarray) -> dict[str, np.ndarray]:
        positions = split(steps)
        train = positions["train"]
        if len(train) <= max_train_per_user:
            return positions
        return {**positions, "train": train[-max_train_per_user:], CAPPED: train[:-max_train_per_user]}

    return capped


# ---------------------------------------------------------------------------------------------
# Randomness and sampling
# ---------------------------------------------------------------------------------------------
def user_rng(seed: int, user_id: str) -> np.random.Generator:
    """A generator seeded from (seed, user_id) by a stable hash, so results do not depend on
    which worker or bundle handles the user, nor on PYTHONHASHSEED."""
    digest = hashlib.blake2b(f"{seed}\x1f{user_id}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


class PopularitySampler:
    """Draws item indices in proportion to a popularity vector, never equal to a given item.

    Sampling is exact and needs no rejection loop: a draw from the popularity with the excluded
    item's mass removed is a uniform u on [0, total - w_e), shifted past the excluded item's
    interval when it falls beyond it.
    """

    def __init__(self, popularity: np.ndarray):
        popularity = np.asarray(popularity, dtype=np.float64).copy()
        popularity[: schema.NUM_RESERVED] = 0.0
        if len(popularity) - schema.NUM_RESERVED < 2:
            raise ValueError("negative sampling needs at least 2 items in the vocabulary")
        if popularity.sum() <= 0:
            raise ValueError("negative sampling needs a positive popularity for some item")
        self._weight = popularity
        self._cdf = np.cumsum(popularity)
        self._num_items = len(popularity)

    def from_uniforms(self, uniforms: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sample_excluding's draws from its uniforms on [0, 1) (one per entry of `exclude`), and where the draw is
        stuck (the excluded item holds all the mass, or rounding landed on it): there sample_excluding draws again."""
        exclude = np.asarray(exclude, dtype=np.int64)
        weight = self._weight[exclude]
        start = self._cdf[exclude] - weight
        u = uniforms * (self._cdf[-1] - weight)
        u = np.where(u >= start, u + weight, u)
        out = np.minimum(np.searchsorted(self._cdf, u, side="right"), self._num_items - 1)
        return out, (out == exclude) | (self._cdf[-1] - weight <= 0)

    def sample_excluding(self, rng: np.random.Generator, exclude: np.ndarray) -> np.ndarray:
        """One index per entry of `exclude`, drawn by popularity among the other items.

        When the excluded item holds all the popularity, the draw is uniform over the others.
        """
        exclude = np.asarray(exclude, dtype=np.int64)
        out, stuck_mask = self.from_uniforms(rng.random(len(exclude)), exclude)
        stuck = np.flatnonzero(stuck_mask)
        if len(stuck):
            uniform = rng.integers(schema.NUM_RESERVED, self._num_items - 1, size=len(stuck))
            out[stuck] = uniform + (uniform >= exclude[stuck])
        return out


def cvr_labels(items: np.ndarray, flags: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each target position t (of one split): 1 if the item at t is purchased at t or at a
    later position of the same split, else 0."""
    labels = np.zeros(len(positions), dtype=np.float32)
    purchased_later: set[int] = set()
    for k in range(len(positions) - 1, -1, -1):
        t = positions[k]
        if flags[t] & PURCHASE:
            purchased_later.add(int(items[t]))
        labels[k] = float(int(items[t]) in purchased_later)
    return labels
