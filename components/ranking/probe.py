"""The gradient-boosted-trees probe of the cvr task: what a practitioner tries before DIEN, as a baseline of the
bench (not a stage of the DAG).

Its rows are the ranking examples' rows: every viewed step of a split, labelled by the features job's own
`cvr_labels` under the same split, rebuilt here from the extract's events because the examples do not carry event
types or times. The row counts are checked against the features output. Features of a target step t (item i,
category c), from the user's events before step t only:
  - views, carts, favs and purchases of i and of c, and the seconds since the last of each (NaN: never);
  - the history length (steps before t);
  - i's popularity (its viewed train rows over all users), i's and c's conversion rate among train rows, smoothed
    toward the global rate; a train row's own label is left out of its rates so that it cannot leak into them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components import metrics, schema
from components.features.pipeline import EVENTS_FILE, ITEMS_FILE
from components.features.sequences import EVENT_DTYPE, MIN_STEPS, VIEW, SplitFn, collapse_repeats, cvr_labels, split_fn

EVENT_KINDS = schema.EVENT_TYPES  # view, cart, fav, purchase
FEATURES = (
    *(f"item_{kind}s" for kind in EVENT_KINDS),
    *(f"item_s_since_{kind}" for kind in EVENT_KINDS),
    *(f"cat_{kind}s" for kind in EVENT_KINDS),
    *(f"cat_s_since_{kind}" for kind in EVENT_KINDS),
    "history_length",
    "item_popularity",
    "item_cvr",
    "cat_cvr",
)
_HISTORY_FEATURES = len(FEATURES) - 3
SMOOTHING = 20.0  # pseudo-rows of the global conversion rate in each item's and category's rate
LIGHTGBM_PARAMS = {
    "objective": "binary",
    "metric": "auc",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "num_threads": 2,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}
MAX_ROUNDS, EARLY_STOPPING = 1000, 50


@dataclasses.dataclass
class ProbeRows:
    """One split: history features [rows, _HISTORY_FEATURES], then per row its item, category, label and user."""

    history: np.ndarray
    items: np.ndarray
    categories: np.ndarray
    labels: np.ndarray
    users: np.ndarray


def history_features(events: np.ndarray, category_of: np.ndarray, split: SplitFn) -> dict[str, tuple]:
    """One user's rows: {split: (history features [n, _HISTORY_FEATURES], items, categories, labels)}.

    `events` are the user's EVENT_DTYPE records sorted as the features job sorts them (item = catalogue row);
    `category_of` maps a catalogue row to its category code.
    """
    steps = collapse_repeats(events)
    starts = np.flatnonzero(np.r_[True, events["item"][1:] != events["item"][:-1]])
    positions = split(steps)
    labels, row_split = {}, {}
    for name in schema.SPLITS:
        viewed = (steps["flags"][positions[name]] & VIEW) > 0
        for t, label in zip(
            positions[name][viewed].tolist(),
            cvr_labels(steps["item"], steps["flags"], positions[name])[viewed].tolist(),
        ):
            labels[t], row_split[t] = label, name
    rows = {name: [] for name in schema.SPLITS}
    kinds = len(EVENT_KINDS)
    by_item: dict[int, np.ndarray] = {}
    by_cat: dict[int, np.ndarray] = {}
    ends = np.r_[starts[1:], len(events)]
    for t, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        item, ts = int(steps["item"][t]), int(steps["ts"][t])
        category = int(category_of[item])
        if t in labels:
            features = np.full(_HISTORY_FEATURES, np.nan)
            for offset, state in ((0, by_item.get(item)), (2 * kinds, by_cat.get(category))):
                features[offset : offset + kinds] = 0.0
                if state is not None:
                    features[offset : offset + kinds] = state[:kinds]
                    seen = state[:kinds] > 0
                    features[offset + kinds : offset + 2 * kinds][seen] = (ts - state[kinds:][seen]) / 1e6
            features[-1] = t
            rows[row_split[t]].append((features, item, category, labels[t]))
        for event in events[start:end]:
            for key, table in ((item, by_item), (category, by_cat)):
                state = table.setdefault(key, np.zeros(2 * kinds))
                state[event["type"]] += 1
                state[kinds + event["type"]] = event["ts"]
    out = {}
    for name, split_rows in rows.items():
        if split_rows:
            features, items, categories, split_labels = zip(*split_rows)
            out[name] = (np.stack(features), np.array(items), np.array(categories), np.array(split_labels, np.float32))
    return out


def _splitter(features_dir: str | Path) -> SplitFn:
    """The split that the features job used, from its stats.json."""
    manifest = schema.FeaturesManifest.read(features_dir)
    window, cap = manifest.split_window, manifest.max_examples_per_user
    if not window:
        return split_fn(manifest.split, cap)
    cut = dt.datetime.fromisoformat(window["cut"])
    return split_fn(
        manifest.split,
        cap,
        cut_us=round(cut.timestamp() * 10**6),
        window_us=round(window["window_days"] * 86_400 * 10**6),
    )


def _user_events(extracted_dir: str | Path):
    """(user_id, sorted EVENT_DTYPE records) per user, and the category code of each catalogue row, as the
    features job builds them (catalogue sorted by item_id; events of unknown items or types dropped)."""
    items = pq.read_table(Path(extracted_dir, ITEMS_FILE), columns=["item_id", "category"]).sort_by("item_id")
    _, category_of = np.unique(items.column("category").to_numpy(zero_copy_only=False), return_inverse=True)
    events = pq.read_table(
        Path(extracted_dir, EVENTS_FILE), columns=["user_id", "item_id", "event_type", "event_ts", "event_seq"]
    )
    item_row = pc.index_in(events.column("item_id"), value_set=items.column("item_id").combine_chunks())
    type_code = pc.index_in(events.column("event_type"), value_set=pc.cast(list(EVENT_KINDS), "string"))
    keep = pc.and_(pc.is_valid(item_row), pc.is_valid(type_code))
    users = events.column("user_id").filter(keep).to_numpy(zero_copy_only=False)
    records = np.empty(len(users), EVENT_DTYPE)
    records["ts"] = events.column("event_ts").filter(keep).cast("int64").to_numpy()
    records["seq"] = events.column("event_seq").filter(keep).to_numpy()
    records["item"] = item_row.filter(keep).to_numpy()
    records["type"] = type_code.filter(keep).to_numpy()
    user_ids, user_code = np.unique(users, return_inverse=True)
    order = np.lexsort((records["type"], records["item"], records["seq"], records["ts"], user_code))
    records, user_code = records[order], user_code[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(user_code)) + 1, len(records)]
    groups = ((user_ids[user_code[a]], records[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
    return groups, category_of


def build_rows(extracted_dir: str | Path, features_dir: str | Path) -> dict[str, ProbeRows]:
    """The probe's rows of every split; fails when they are not the ranking examples' rows (their counts differ)."""
    split = _splitter(features_dir)
    groups, category_of = _user_events(extracted_dir)
    parts = {name: [] for name in schema.SPLITS}
    for user_id, events in groups:
        if len(collapse_repeats(events)) < MIN_STEPS:
            continue  # the features job drops these users too
        for name, (history, items, categories, labels) in history_features(events, category_of, split).items():
            parts[name].append((history, items, categories, labels, np.full(len(labels), str(user_id))))
    manifest = schema.FeaturesManifest.read(features_dir)
    expected = {name: manifest.example_count(schema.RANKING_DIR, name) for name in schema.SPLITS}
    out = {}
    for name, split_parts in parts.items():
        columns = [np.concatenate(column) for column in zip(*split_parts)] if split_parts else []
        rows = len(columns[3]) if columns else 0
        if rows != expected[name]:
            raise schema.SchemaError(
                f"trees probe: {rows} {name} rows from the extract, but the features output "
                f"has {expected[name]} ranking examples; are they of the same run?"
            )
        if rows:
            out[name] = ProbeRows(*columns)
    return out


def _rates(keys: np.ndarray, train_keys: np.ndarray, train_labels: np.ndarray, own_label: np.ndarray | None):
    """(train rows of each key, smoothed conversion rate) for `keys`; `own_label` (train rows) is left out."""
    index = {key: i for i, key in enumerate(np.unique(train_keys).tolist())}
    rows = np.bincount([index[k] for k in train_keys.tolist()], minlength=len(index)).astype(np.float64)
    positives = np.bincount([index[k] for k in train_keys.tolist()], weights=train_labels, minlength=len(index))
    at = np.array([index.get(k, -1) for k in keys.tolist()])
    n = np.where(at >= 0, rows[np.maximum(at, 0)], 0.0)
    p = np.where(at >= 0, positives[np.maximum(at, 0)], 0.0)
    if own_label is not None:
        n, p = n - 1.0, p - own_label
    prior = train_labels.mean()
    return n, (p + SMOOTHING * prior) / (n + SMOOTHING)


def feature_matrix(rows: ProbeRows, train: ProbeRows, is_train: bool) -> np.ndarray:
    """The rows' history features plus item popularity and the item's and category's conversion rates in train."""
    own = rows.labels if is_train else None
    popularity, item_cvr = _rates(rows.items, train.items, train.labels, own)
    _, cat_cvr = _rates(rows.categories, train.categories, train.labels, own)
    return np.column_stack([rows.history, popularity, item_cvr, cat_cvr])


def run_probe(splits: dict[str, ProbeRows], seed: int) -> dict:
    """Trains LightGBM on train (rounds chosen by valid AUC) and scores test.

    Returns auc, gauc, logloss, train_s, best_iteration and `test_scores` (probabilities in test row order).
    """
    import lightgbm

    if "train" not in splits or "test" not in splits:
        raise schema.SchemaError("trees probe: needs train and test rows")
    train = splits["train"]
    started = time.perf_counter()
    params = {**LIGHTGBM_PARAMS, "seed": seed}
    train_set = lightgbm.Dataset(feature_matrix(train, train, True), train.labels, feature_name=list(FEATURES))
    callbacks, valid_sets = [], []
    if "valid" in splits and 0 < splits["valid"].labels.sum() < len(splits["valid"].labels):
        valid = splits["valid"]
        valid_sets = [lightgbm.Dataset(feature_matrix(valid, train, False), valid.labels, reference=train_set)]
        callbacks = [lightgbm.early_stopping(EARLY_STOPPING, verbose=False)]
    booster = lightgbm.train(
        params, train_set, MAX_ROUNDS if valid_sets else 200, valid_sets=valid_sets, callbacks=callbacks
    )
    train_s = time.perf_counter() - started
    test = splits["test"]
    scores = booster.predict(feature_matrix(test, train, False), num_iteration=booster.best_iteration or None)
    both = 0 < test.labels.sum() < len(test.labels)
    return {
        "auc": metrics.auc(test.labels, scores) if both else float("nan"),
        "gauc": metrics.gauc(test.labels, scores, test.users),
        "logloss": metrics.logloss(test.labels, scores),
        "train_s": train_s,
        "best_iteration": int(booster.best_iteration or booster.current_iteration()),
        "test_scores": scores,
    }


def run_seeds(extracted_dir: str | Path, features_dir: str | Path, seeds: tuple[int, ...]) -> dict[int, dict]:
    """run_probe for each seed on rows built once: {seed: its figures with `test_scores`, `test_labels` and
    `test_users`} (the ranking bench runs it in a process of its own: the rows and LightGBM's bins are then never
    held beside the neural rankers' data)."""
    splits = build_rows(extracted_dir, features_dir)
    test = splits.get("test")
    runs = {}
    for seed in seeds:
        run = run_probe(splits, seed)
        run["test_labels"], run["test_users"] = test.labels, test.users
        runs[seed] = run
    return runs
