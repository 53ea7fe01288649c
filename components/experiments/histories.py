"""Users' latest histories from an event log, as vocabulary indices, the way the features stage builds them.

Each step has two entries: one from an events frame with string ids (the bandit re-ranker stage reads extract's
parquet), one from integer arrays (the studies' replayed log, shop.LoggedEvents, which never turns millions of ids
into Python strings); the frame's entry only encodes its columns and calls the arrays' one, so both build the same
matrices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components import schema
from components.features.sequences import event_flag


def lookup(values, mapping: dict, missing: int) -> np.ndarray:
    """int64 mapping[value] for each of `values` (`missing` where absent or null). The distinct values are mapped
    once (pd.factorize): ~3x faster than Series.map over the large preset's 10M string ids."""
    codes, distinct = pd.factorize(
        values if isinstance(values, (pd.Series, pd.Index, np.ndarray)) else np.asarray(values)
    )
    table = np.array([mapping.get(value, missing) for value in distinct] + [missing], dtype=np.int64)
    return table[codes]  # code -1 (null) takes the last entry


def _vocab_items(events: pd.DataFrame, item_index: dict[str, int]) -> np.ndarray:
    return lookup(events["item_id"], item_index, schema.OOV_INDEX)


def _step_starts(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """bool [E]: the rows that start a step (consecutive repeats of a user's item collapse, as in features)."""
    start = np.ones(len(items), dtype=bool)
    start[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    return start


def user_histories(
    events: pd.DataFrame, item_index: dict[str, int], item_category: np.ndarray, max_len: int
) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Each user's last max_len steps (consecutive repeats collapsed, as the features stage does), as vocabulary
    indices left-padded with PAD: (row of each user, items [U, L], categories [U, L])."""
    return histories_of(events["user_id"].to_numpy(), _vocab_items(events, item_index), item_category, max_len)


def histories_of(users: np.ndarray, items: np.ndarray, item_category: np.ndarray, max_len: int):
    """user_histories of rows in time order per user: `users` any ids (strings or integer codes), `items` their
    vocabulary indices. (row of each user id, items [U, L], categories [U, L]); rows follow the ids' first appearance."""
    keep = _step_starts(users, items)
    steps = pd.DataFrame({"user": users[keep], "item": items[keep]})
    steps = steps.groupby("user", sort=True).tail(max_len)
    user_row, distinct = pd.factorize(steps["user"])  # codes in order of appearance, as unique() lists them
    rows = {user: row for row, user in enumerate(distinct)}
    position = steps.groupby("user", sort=False).cumcount().to_numpy()
    length = np.bincount(user_row, minlength=len(rows))
    hist = np.zeros((len(rows), max_len), dtype=np.int64)
    hist[user_row, max_len - length[user_row] + position] = steps["item"].to_numpy()
    return rows, hist, np.where(hist > 0, item_category[hist], schema.PAD_INDEX)


def type_flags(event_types) -> np.ndarray:
    """int64 flags of event-type names (event_flag; 0 for a type the features stage does not know)."""
    return lookup(event_types, {kind: event_flag(kind) for kind in schema.EVENT_TYPES}, 0)


def user_behaviour(events: pd.DataFrame, item_index: dict[str, int], rows: dict[str, int], max_len: int):
    """The behaviour of user_histories' steps (its `rows`), from the events' event_type and event_ts: each step's
    event-type flags (its events' OR, as the features stage merges repeats) and seconds since the step before, and
    the request's gap at the log's last event (as the export's as_of). A serving.funnel.Behaviour [U, L]."""
    stamps = pd.to_datetime(events["event_ts"], utc=True)
    seconds = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    flags = type_flags(events["event_type"].to_numpy())
    return behaviour_of(events["user_id"].to_numpy(), _vocab_items(events, item_index), flags, seconds, rows, max_len)


def behaviour_of(
    users: np.ndarray, items: np.ndarray, flags: np.ndarray, seconds: np.ndarray, rows: dict, max_len: int
):
    """user_behaviour of rows given as arrays: user ids, vocabulary items, event-type flags and UTC seconds."""
    from components.serving.funnel import Behaviour

    starts = np.flatnonzero(_step_starts(users, items))
    steps = pd.DataFrame(
        {
            "user": users[starts],
            "flags": np.bitwise_or.reduceat(flags, starts) if len(starts) else flags[:0],
            "ts": seconds[starts],
        }
    )
    steps["gap"] = steps.groupby("user", sort=False)["ts"].diff().fillna(schema.NO_GAP).astype(np.int64)
    steps = steps.groupby("user", sort=True).tail(max_len)
    user_row = lookup(steps["user"], rows, -1)
    position = steps.groupby("user", sort=False).cumcount().to_numpy()
    length = np.bincount(user_row, minlength=len(rows))
    types = np.zeros((len(rows), max_len), dtype=np.int64)
    gaps = np.full((len(rows), max_len), schema.NO_GAP, dtype=np.int64)
    column = max_len - length[user_row] + position
    types[user_row, column], gaps[user_row, column] = steps["flags"].to_numpy(), steps["gap"].to_numpy()
    last_ts = steps.groupby("user", sort=False)["ts"].last()
    last = np.zeros(len(rows), dtype=np.int64)
    last[lookup(last_ts.index, rows, -1)] = last_ts.to_numpy()
    return Behaviour(types, gaps, np.maximum(seconds.max(initial=0) - last, 0))
