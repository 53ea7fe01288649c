"""What export serves from: every user's latest history and the catalogue, read from the features output.

Serving is for tomorrow, so a user's history is the full latest one: the test example's history
plus its target (the last step), trimmed to max_len, with each step's event types and gap (the target's own from
the example's target_type and target_gap). Every item the user ever had is masked.
Users in the user vocabulary without a test example get an empty history (the popularity fallback).
The lists' request time is `as_of`, the last step's time over all users (the end of the data), so a request's gap
is how long the user has been away by then.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from components import schema
from components.serving.funnel import Behaviour


@dataclasses.dataclass
class ServingInputs:
    user_ids: np.ndarray  # str [U]
    hist_items: np.ndarray  # int64 [U, max_len], left-padded, features vocabulary
    seen_items: list  # per user: int64 array of every item the user had
    item_ids: np.ndarray  # str [num_items]: features index -> item id ("" at reserved indices)
    available: np.ndarray  # bool [num_items]
    popularity: np.ndarray  # float64 [num_items]: train target counts
    hist_types: np.ndarray  # int64 [U, max_len], aligned with hist_items: event-type flags (0 on padding)
    hist_gaps: np.ndarray  # int64 [U, max_len]: seconds since the step before (NO_GAP on padding, first steps)
    last_ts: np.ndarray  # int64 [U]: the last step's time, seconds since the epoch (NO_GAP without a history)
    as_of: int  # the lists' request time, seconds since the epoch: the latest last_ts

    def behaviour(self, rows) -> Behaviour:
        """The users at `rows`' behaviour for the funnel, the request at `as_of`."""
        last = self.last_ts[rows]
        request_gap = np.where(last == schema.NO_GAP, schema.NO_GAP, np.maximum(self.as_of - last, 0))
        return Behaviour(self.hist_types[rows], self.hist_gaps[rows], request_gap.astype(np.int64))


def read_serving_inputs(features_dir: str | Path) -> ServingInputs:
    """Reads vocabularies, item features and the test split into serving order (users sorted by id)."""
    from components.features import reader

    spec = schema.FeatureSpec.read(features_dir)
    item_ids, available, popularity = read_catalogue(features_dir, spec.num_items)
    test = reader.load_numpy(features_dir, schema.RETRIEVAL_DIR, "test")
    latest = latest_example_per_user(test[schema.USER], test[schema.TARGET_TS])
    test = {name: column[latest] for name, column in test.items()}
    users = _user_ids(features_dir, test[schema.USER])
    histories = [
        np.append(hist, target)[-spec.max_len :]
        for hist, target in zip(test[schema.HIST_ITEMS], test[schema.TARGET_ITEM])
    ]
    types = [
        np.append(hist, target)[-spec.max_len :]
        for hist, target in zip(test[schema.HIST_TYPES], test[schema.TARGET_TYPE])
    ]
    gaps = [
        np.append(hist, target)[-spec.max_len :]
        for hist, target in zip(test[schema.HIST_GAPS], test[schema.TARGET_GAP])
    ]
    last_ts = np.asarray(test[schema.TARGET_TS], np.int64)
    seen = [
        np.unique(np.concatenate([s, h, [t]]).astype(np.int64))
        for s, h, t in zip(test[schema.SEEN_ITEMS], test[schema.HIST_ITEMS], test[schema.TARGET_ITEM])
    ]
    without_history = sorted(set(schema.read_vocab(features_dir, schema.USER_VOCAB)) - set(users))
    users = np.concatenate([users, np.asarray(without_history, dtype=object)])
    empty = [np.empty(0, dtype=np.int64)] * len(without_history)
    histories, types, gaps, seen = histories + empty, types + empty, gaps + empty, seen + empty
    last_ts = np.concatenate([last_ts, np.full(len(without_history), schema.NO_GAP, np.int64)])
    if not len(users):
        raise schema.SchemaError(f"{features_dir}: no users to export (empty test split and user vocabulary)")
    order = np.argsort(users, kind="stable")
    return ServingInputs(
        user_ids=users[order],
        hist_items=reader.pad_left([histories[i] for i in order], spec.max_len),
        seen_items=[seen[i] for i in order],
        item_ids=item_ids,
        available=available,
        popularity=popularity,
        hist_types=reader.pad_left([types[i] for i in order], spec.max_len),
        hist_gaps=reader.pad_left([gaps[i] for i in order], spec.max_len, fill=schema.NO_GAP),
        last_ts=last_ts[order],
        as_of=int(last_ts.max(initial=0)),
    )


def read_catalogue(features_dir: str | Path, num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item ids, availability and train popularity by vocabulary index, checked against the spec."""
    path = Path(features_dir, schema.ITEM_FEATURES)
    if not path.exists():
        raise schema.SchemaError(f"{features_dir}: no {schema.ITEM_FEATURES}")
    table = pq.read_table(path)
    missing = [c for c in ("item_index", "item_id", "available", "train_count") if c not in table.column_names]
    if missing:
        raise schema.SchemaError(f"{path}: missing column(s) {missing}")
    index = table.column("item_index").to_numpy()
    if not np.array_equal(index, np.arange(schema.NUM_RESERVED, num_items)):
        raise schema.SchemaError(
            f"{path}: item_index must run {schema.NUM_RESERVED}..{num_items - 1} in order "
            f"(feature_spec num_items={num_items}), got {len(index)} rows"
        )
    for column in ("item_id", "available", "train_count"):
        if table.column(column).null_count:
            raise schema.SchemaError(f"{path}: column {column!r} has null values")
    item_ids = np.full(num_items, "", dtype=object)
    item_ids[index] = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    available = np.zeros(num_items, dtype=bool)
    available[index] = table.column("available").to_numpy(zero_copy_only=False)
    popularity = np.zeros(num_items, dtype=np.float64)
    popularity[index] = table.column("train_count").to_numpy()
    return item_ids, available, popularity


def latest_example_per_user(user_index: np.ndarray, target_ts: np.ndarray) -> np.ndarray:
    """Ascending rows of each user's latest test example (the last row among equal times). A time split's test
    window holds one example per step (a Taobao user buys several items on the test day); the latest one's history
    holds the others' targets, and a list is made once per user from everything up to now."""
    user_index, target_ts = np.asarray(user_index, np.int64), np.asarray(target_ts, np.int64)
    order = np.lexsort((np.arange(len(user_index)), target_ts, user_index))
    last = np.r_[user_index[order][1:] != user_index[order][:-1], True] if len(order) else np.zeros(0, bool)
    return np.sort(order[last])


def _user_ids(features_dir: str | Path, user_index: np.ndarray) -> np.ndarray:
    vocab = np.asarray(schema.read_vocab(features_dir, schema.USER_VOCAB), dtype=object)
    user_index = np.asarray(user_index, dtype=np.int64)
    if len(user_index) and (user_index.min() < schema.NUM_RESERVED or user_index.max() >= len(vocab) + 2):
        raise schema.SchemaError(f"{features_dir}: test examples hold user indices outside the user vocabulary")
    return vocab[user_index - schema.NUM_RESERVED]
