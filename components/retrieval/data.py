"""The retrieval stage's view of the features output: padded example matrices and the item catalogue."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from components import metrics, schema
from components.features import reader

NUM_PRICE_BUCKETS = 10  # price deciles; bucket 0 = unknown price


@dataclasses.dataclass(frozen=True)
class Examples:
    """One split's retrieval examples; histories left-padded with PAD so the newest item is last."""

    hist_items: np.ndarray  # int64 [n, max_len]
    hist_cats: np.ndarray  # int64 [n, max_len]
    target_item: np.ndarray  # int64 [n]
    user: np.ndarray  # int64 [n]
    seen_items: np.ndarray | None  # object [n] of int64 arrays (valid/test only)
    # seconds from each step's previous step (schema.NO_GAP: none or unknown), aligned with hist_items, and from the
    # last step to the target (the request); None where the features do not hold them
    hist_gaps: np.ndarray | None = None  # int64 [n, max_len]
    target_gap: np.ndarray | None = None  # int64 [n]

    def __len__(self) -> int:
        return len(self.target_item)

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """(hist_gaps [n, max_len], request gap [n]), NO_GAP throughout where the examples have none."""
        if self.hist_gaps is None or self.target_gap is None:
            return np.full_like(self.hist_items, schema.NO_GAP), np.full_like(self.target_item, schema.NO_GAP)
        return self.hist_gaps, self.target_gap


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """Per-item side features indexed by vocabulary index (rows PAD and OOV are placeholders)."""

    item_ids: np.ndarray  # object [num_items]: "" for PAD, "[OOV]" for OOV, then the vocabulary
    category_ids: list[str]  # the category vocabulary (without reserved tokens)
    item_category: np.ndarray  # int64 [num_items]
    item_brand: np.ndarray  # int64 [num_items]: 0 unknown, else 1 + brand rank
    item_price_bucket: np.ndarray  # int64 [num_items]: 0 unknown, else 1..NUM_PRICE_BUCKETS
    available: np.ndarray  # bool [num_items]; PAD and OOV are never available
    train_count: np.ndarray  # int64 [num_items]: times an item is a train target
    brand_ids: tuple[str, ...] = ()  # brand index -> name ("" = unknown at 0), to carry brand rows by name

    @property
    def num_items(self) -> int:
        """The item vocabulary size, reserved rows included (the models' table size)."""
        return len(self.item_ids)

    @property
    def num_categories(self) -> int:
        """The category vocabulary size, reserved indices included."""
        return len(self.category_ids) + schema.NUM_RESERVED

    @property
    def num_brands(self) -> int:
        """The brand table size: the largest brand index plus one."""
        return int(self.item_brand.max()) + 1

    def sampling_probability(self) -> np.ndarray:
        """P(item is an in-batch candidate) = its share of train targets, for the logQ correction.

        Items never seen as a train target get the probability of one occurrence, so their log is finite.
        """
        counts = np.maximum(self.train_count, 1).astype(np.float64)
        return (counts / max(int(self.train_count.sum()), 1)).astype(np.float32)


def load_examples(features_dir: str | Path, split: str, max_len: int) -> Examples:
    """One split's retrieval examples, histories left-padded to `max_len` [n, max_len]; an empty split is refused."""
    columns = reader.load_numpy(features_dir, schema.RETRIEVAL_DIR, split)
    if not len(columns.get(schema.TARGET_ITEM, ())):
        raise schema.SchemaError(f"{features_dir}: the {split} split has no retrieval examples")
    return _examples(columns, max_len)


def _examples(columns: dict[str, np.ndarray], max_len: int) -> Examples:
    return Examples(
        hist_items=reader.pad_left(columns[schema.HIST_ITEMS], max_len),
        hist_cats=reader.pad_left(columns[schema.HIST_CATS], max_len),
        target_item=columns[schema.TARGET_ITEM].astype(np.int64),
        user=columns[schema.USER].astype(np.int64),
        seen_items=columns.get(schema.SEEN_ITEMS),
        hist_gaps=(
            reader.pad_left(columns[schema.HIST_GAPS], max_len, fill=schema.NO_GAP)
            if schema.HIST_GAPS in columns
            else None
        ),
        target_gap=columns[schema.TARGET_GAP].astype(np.int64) if schema.TARGET_GAP in columns else None,
    )


def concatenate_examples(first: Examples, second: Examples) -> Examples:
    """The rows of both, first's then second's, as one training set (seen_items dropped: training never reads them;
    gaps kept only when both have them)."""
    gaps = first.hist_gaps is not None and second.hist_gaps is not None
    request_gaps = first.target_gap is not None and second.target_gap is not None
    return Examples(
        hist_items=np.concatenate([first.hist_items, second.hist_items]),
        hist_cats=np.concatenate([first.hist_cats, second.hist_cats]),
        target_item=np.concatenate([first.target_item, second.target_item]),
        user=np.concatenate([first.user, second.user]),
        seen_items=None,
        hist_gaps=np.concatenate([first.hist_gaps, second.hist_gaps]) if gaps else None,
        target_gap=np.concatenate([first.target_gap, second.target_gap]) if request_gaps else None,
    )


def load_catalogue(features_dir: str | Path) -> Catalogue:
    """The catalogue of item_features.parquet (ids, categories, brands, prices, availability), checked against the
    contract."""
    path = Path(features_dir, schema.ITEM_FEATURES)
    if not path.exists():
        raise schema.SchemaError(f"{features_dir}: no {schema.ITEM_FEATURES}")
    frame = pd.read_parquet(path)
    missing = [c for c in schema.ITEM_FEATURE_COLUMNS if c not in frame.columns]
    if missing:
        raise schema.SchemaError(f"{path}: missing column(s) {missing}")
    expected = np.arange(schema.NUM_RESERVED, schema.NUM_RESERVED + len(frame))
    if not np.array_equal(frame["item_index"].to_numpy(), expected):
        raise schema.SchemaError(f"{path}: item_index must run {schema.NUM_RESERVED}..{expected[-1]} in row order")
    for column in ("item_id", "category_index", "train_count", "available"):
        if frame[column].isna().any():
            raise schema.SchemaError(f"{path}: column {column!r} has null values")
    reserved = np.array([0] * schema.NUM_RESERVED, dtype=np.int64)
    brand_index, brand_ids = _brand_indices(frame["brand"], with_names=True)
    return Catalogue(
        item_ids=np.concatenate([["", "[OOV]"], frame["item_id"].astype(str).to_numpy()]).astype(object),
        category_ids=schema.read_vocab(features_dir, schema.CATEGORY_VOCAB),
        item_category=np.concatenate(
            [[schema.PAD_INDEX, schema.OOV_INDEX], frame["category_index"].to_numpy(np.int64)]
        ),
        item_brand=np.concatenate([reserved, brand_index]),
        item_price_bucket=np.concatenate([reserved, _price_buckets(frame["price"])]),
        available=np.concatenate([[False, False], frame["available"].to_numpy(bool)]),
        train_count=np.concatenate([reserved, frame["train_count"].to_numpy(np.int64)]),
        brand_ids=brand_ids,
    )


def _brand_indices(brands: pd.Series, with_names: bool = False):
    """Brands by item count (ties by name), 1-based; "" or null is 0 (unknown). With `with_names`, also the
    names by index."""
    names = brands.fillna("").astype(str)
    counts = names[names != ""].value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    index = {name: rank + 1 for rank, (name, _) in enumerate(ranked)}
    indices = names.map(lambda name: index.get(name, 0)).to_numpy(np.int64)
    if with_names:
        return indices, ("",) + tuple(name for name, _ in ranked)
    return indices


def _price_buckets(prices: pd.Series) -> np.ndarray:
    """Log-price deciles over the known prices; unknown (NaN or <= 0) is bucket 0."""
    values = prices.to_numpy(np.float64)
    known = np.isfinite(values) & (values > 0)
    buckets = np.zeros(len(values), dtype=np.int64)
    if known.any():
        logs = np.log(values[known])
        edges = np.quantile(logs, np.linspace(0, 1, NUM_PRICE_BUCKETS + 1)[1:-1])
        buckets[known] = 1 + np.searchsorted(edges, logs, side="right")
    return buckets


@dataclasses.dataclass(frozen=True)
class Sequences:
    """Each user's most recent train steps for a loss at every step: step t's input is the item at t
    (left-padded like Examples), its target the item at t + 1 (PAD where a step has no target)."""

    hist_items: np.ndarray  # int64 [users, max_len]
    hist_cats: np.ndarray  # int64 [users, max_len]
    target_item: np.ndarray  # int64 [users, max_len]
    # each step's gap from the step before (NO_GAP for padding and a user's first step), and the gap from the
    # sequence's newest step to its last target: step t's request gap is hist_gaps[t + 1], the newest step's this
    hist_gaps: np.ndarray | None = None  # int64 [users, max_len]
    target_gap: np.ndarray | None = None  # int64 [users]

    def __len__(self) -> int:
        return len(self.hist_items)

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """(hist_gaps [users, max_len], request gap of the newest step [users]), NO_GAP where unknown."""
        if self.hist_gaps is None or self.target_gap is None:
            return np.full_like(self.hist_items, schema.NO_GAP), np.full(len(self), schema.NO_GAP, np.int64)
        return self.hist_gaps, self.target_gap

    @property
    def num_targets(self) -> int:
        """The real (non-padding) targets of every position: what an epoch's loss is summed over."""
        return int((self.target_item != schema.PAD_INDEX).sum())


def train_sequences(train: Examples, item_category: np.ndarray) -> Sequences:
    """Rebuilds each user's train sequence from the train prefix examples (as many steps as they hold).

    A user's last train example is the one that no other example of the user extends (the next
    example's history is this history plus this target, cut to the same length), so row order in
    the files does not matter. Its history plus its target are the user's newest train steps: as
    inputs, all but the last; as targets, all but the first. Every train target whose history the
    window holds is then the target of one step, and no step's input holds its target or later items.
    """
    max_len = train.hist_items.shape[1]
    by_user: dict[int, list[int]] = {}
    for row, user in enumerate(train.user.tolist()):
        by_user.setdefault(user, []).append(row)
    hist_items = np.full((len(by_user), max_len), schema.PAD_INDEX, dtype=np.int64)
    hist_cats = np.full_like(hist_items, schema.PAD_INDEX)
    targets = np.full_like(hist_items, schema.PAD_INDEX)
    example_gaps, example_target_gap = train.gaps()
    hist_gaps = np.full_like(hist_items, schema.NO_GAP)
    target_gap = np.full(len(by_user), schema.NO_GAP, np.int64)
    for out, rows in enumerate(by_user.values()):
        windows = {row: train.hist_items[row][train.hist_items[row] != schema.PAD_INDEX] for row in rows}
        starts = {tuple(window) for window in windows.values()}
        extended = [
            row for row in rows if tuple(np.append(windows[row], train.target_item[row])[-max_len:]) not in starts
        ]
        last = max(extended or rows, key=lambda row: len(windows[row]))
        items = np.append(windows[last], train.target_item[last])[-(max_len + 1) :]
        steps = len(items) - 1
        hist_items[out, max_len - steps :] = items[:-1]
        hist_cats[out, max_len - steps :] = item_category[items[:-1]]
        targets[out, max_len - steps :] = items[1:]
        # the gaps run with the items: the window's own gaps, then the target's (its gap from the window's newest)
        real = train.hist_items[last] != schema.PAD_INDEX
        gaps = np.append(example_gaps[last][real], example_target_gap[last])[-(max_len + 1) :]
        hist_gaps[out, max_len - steps :] = gaps[:-1]
        target_gap[out] = gaps[-1]
    return Sequences(
        hist_items=hist_items, hist_cats=hist_cats, target_item=targets, hist_gaps=hist_gaps, target_gap=target_gap
    )


@dataclasses.dataclass(frozen=True)
class StreamedExamples:
    """A train split too large for memory, partitioned by user into buckets on local disk (reader.partition_by_user):
    bucket b is one .npz of that bucket's rows (Examples' train fields, or with every_position the users' Sequences) in
    canonical order, plus their example keys. Training reads one bucket at a time (training.train)."""

    paths: tuple[str, ...]  # one per non-empty bucket, in bucket order
    sizes: tuple[int, ...]  # rows (examples, or user sequences) of each
    every_position: bool

    def __len__(self) -> int:
        return sum(self.sizes)

    def bucket(self, index: int) -> tuple[Examples | Sequences, np.ndarray]:
        """(rows, example keys of the bucket's train examples) of bucket `index`."""
        with np.load(self.paths[index]) as arrays:
            fields = {name: arrays[name] for name in arrays.files if name != "keys"}
            keys = arrays["keys"]
        rows: Examples | Sequences = Sequences(**fields) if self.every_position else Examples(seen_items=None, **fields)
        return rows, keys

    def keys(self, index: int) -> np.ndarray:
        """The example keys of bucket `index` alone (a small read)."""
        with np.load(self.paths[index]) as arrays:
            return arrays["keys"]


def stream_examples(
    features_dir: str | Path,
    max_len: int,
    directory: str | Path,
    keys_of: Callable[[Examples], np.ndarray],
    bucket_rows: int = reader.BUCKET_ROWS,
    item_category: np.ndarray | None = None,
    with_valid: bool = False,
) -> StreamedExamples:
    """The train split as StreamedExamples under `directory`: partitioned by user (one pass over the shards), then each
    bucket read alone, padded to `max_len`, keyed by `keys_of` (training.example_keys) and, with `item_category`
    (every_position), rebuilt into its users' Sequences (a user's rows are all in one bucket). `with_valid` (the
    refit through valid): the valid split is partitioned into the same user buckets and each bucket also holds its
    users' valid rows, after their train rows (as concatenate_examples puts them). Memory holds one bucket."""
    count = reader.example_count(features_dir, schema.RETRIEVAL_DIR, "train")
    if not count:
        raise schema.SchemaError(f"{features_dir}: the train split has no retrieval examples")
    buckets = reader.partition_by_user(
        features_dir, schema.RETRIEVAL_DIR, "train", directory, reader.bucket_count(count, bucket_rows)
    )
    valid_buckets = (
        reader.partition_by_user(features_dir, schema.RETRIEVAL_DIR, "valid", directory, len(buckets))
        if with_valid
        else [None] * len(buckets)
    )
    paths, sizes = [], []
    for path, valid_path in zip(buckets, valid_buckets, strict=True):
        parts = []
        for split, part in (("train", path), ("valid", valid_path)):
            if part is None:
                continue
            columns = reader.load_bucket(part, schema.RETRIEVAL_DIR, split)
            os.remove(part)
            if len(columns.get(schema.TARGET_ITEM, ())):
                parts.append(_examples(columns, max_len))
        if not parts:
            continue
        examples = parts[0] if len(parts) == 1 else concatenate_examples(*parts)
        rows: Examples | Sequences = examples if item_category is None else train_sequences(examples, item_category)
        fields = {
            field.name: getattr(rows, field.name)
            for field in dataclasses.fields(rows)
            if field.name != "seen_items" and getattr(rows, field.name) is not None
        }
        out = str(Path(path).with_suffix(".npz"))
        np.savez(out, keys=keys_of(examples), **fields)
        paths.append(out)
        sizes.append(len(rows))
    return StreamedExamples(tuple(paths), tuple(sizes), every_position=item_category is not None)


def sample_users_of(examples: Examples, user_ids: np.ndarray, count: int) -> Examples:
    """The examples of the `count` users whose ids hash lowest (metrics.sample_users, the same users evaluation's
    max_users keeps), every field kept, in their order; `examples` itself for count 0 or one covering them all.
    `user_ids`: user index -> id, reserved indices included."""
    rows = metrics.sample_users(np.asarray(user_ids, dtype=object)[examples.user], count)
    if len(rows) == len(examples):
        return examples
    fields = {f.name: getattr(examples, f.name) for f in dataclasses.fields(examples)}
    return Examples(**{name: None if values is None else values[rows] for name, values in fields.items()})


def valid_selection(
    features_dir: str | Path, user_ids: np.ndarray, count: int, max_len: int
) -> tuple[Examples, np.ndarray]:
    """(the valid examples selection scores, every valid example's target item), read without holding the whole
    split: its user and target columns first (the refit counts the targets), then the rows of sample_users_of's
    `count` users alone (reader.load_sample; every row for 0)."""
    loaded = reader.load_columns(features_dir, schema.RETRIEVAL_DIR, "valid", (schema.USER, schema.TARGET_ITEM))
    users, targets = loaded[schema.USER], loaded[schema.TARGET_ITEM]
    if not len(users):
        raise schema.SchemaError(f"{features_dir}: the valid split has no retrieval examples")
    sampled = reader.load_sample(features_dir, schema.RETRIEVAL_DIR, "valid", user_ids, count, users)
    return _examples(sampled, max_len), targets
