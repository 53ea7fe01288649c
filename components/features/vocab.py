"""Vocabularies built from the users' steps: counts, ordering, index lookups and item features.

Items and categories are ranked by how many steps they occur in, users by their number of steps;
ties go by id, so the files are identical across runs and runners. Index = position + 2, because
0 (padding) and 1 (out of vocabulary) are reserved in every model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from components import schema
from components.features.sequences import PopularitySampler


@dataclasses.dataclass
class VocabCounts:
    """What the vocabularies are built from; summed over users by a CombineFn."""

    item_steps: np.ndarray  # int64, indexed by catalogue row
    item_train_targets: np.ndarray  # int64, indexed by catalogue row
    user_steps: list[tuple[str, int]]

    @classmethod
    def empty(cls) -> VocabCounts:
        """The counts of no user: the CombineFn's accumulator to start from."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), [])

    def add_block(self, users: list[str], step_counts: np.ndarray, items: np.ndarray, train_items: np.ndarray) -> None:
        """Adds a block of users at once: their ids, numbers of steps, and all their step items and train-target
        items (catalogue rows)."""
        needed = int(items.max()) + 1 if len(items) else 0
        if needed > len(self.item_steps):
            self.item_steps = _grow(self.item_steps, needed)
            self.item_train_targets = _grow(self.item_train_targets, needed)
        steps = np.bincount(items, minlength=needed)
        train = np.bincount(train_items, minlength=needed)
        self.item_steps[: len(steps)] += steps
        self.item_train_targets[: len(train)] += train
        self.user_steps.extend(zip(users, np.asarray(step_counts).tolist()))

    def merge(self, other: VocabCounts) -> None:
        """Adds `other`'s counts into these (in place), as the CombineFn merges accumulators."""
        self.item_steps = _add_counts(self.item_steps, other.item_steps)
        self.item_train_targets = _add_counts(self.item_train_targets, other.item_train_targets)
        self.user_steps.extend(other.user_steps)


def _grow(counts: np.ndarray, needed: int) -> np.ndarray:
    """Room for `needed` counters, doubling so that growing costs O(1) amortised per user."""
    out = np.zeros(max(needed, 2 * len(counts)), np.int64)
    out[: len(counts)] = counts
    return out


def _add_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) < len(b):
        a, b = b, a
    out = a.astype(np.int64, copy=True)
    out[: len(b)] += b
    return out


def _fit(counts: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, np.int64)
    n = min(size, len(counts))
    out[:n] = counts[:n]
    return out


def _by_count_then_id(ids: list[str], counts: list[int]) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: (-counts[i], ids[i]))


@dataclasses.dataclass
class Vocabulary:
    """The vocabularies plus the lookups the example builder needs (shipped as a side input)."""

    items: list[str]
    categories: list[str]
    users: list[str]
    item_of_row: np.ndarray  # catalogue row -> item index (OOV for rows without steps)
    item_category: np.ndarray  # item index -> category index (reserved indices map to themselves)
    item_steps: np.ndarray  # item index -> number of steps
    train_count: np.ndarray  # item index -> occurrences as a train retrieval target
    user_index: dict[str, int]
    catalogue_rows: np.ndarray  # item index - 2 -> catalogue row

    @property
    def num_items(self) -> int:
        """The item vocabulary size including the reserved indices, as the models size their tables."""
        return len(self.items) + schema.NUM_RESERVED

    @property
    def num_categories(self) -> int:
        """The category vocabulary size including the reserved indices."""
        return len(self.categories) + schema.NUM_RESERVED

    @property
    def num_users(self) -> int:
        """The user vocabulary size including the reserved indices."""
        return len(self.users) + schema.NUM_RESERVED

    def sampler(self) -> PopularitySampler:
        """Samples negatives by train popularity; by step counts when no user has a train target
        (every user has exactly the minimum number of steps)."""
        popularity = self.train_count if self.train_count.sum() > 0 else self.item_steps
        return PopularitySampler(popularity)


def build_vocabulary(counts: VocabCounts, catalogue: pa.Table, catalogue_items: bool = False) -> Vocabulary:
    """Ranks items, categories and users; `catalogue` is the sorted, validated items table.

    With `catalogue_items` (the time split's daily runs), available catalogue items without any step follow the
    ranked ones (by id), with their categories: new items, retrievable through their features from the first day."""
    item_steps = _fit(counts.item_steps, catalogue.num_rows)
    train_targets = _fit(counts.item_train_targets, catalogue.num_rows)
    if not counts.user_steps:
        raise schema.SchemaError(
            "no user has enough steps (distinct consecutive items) left; nothing to build features from"
        )
    ids = catalogue.column("item_id").to_pylist()
    seen_rows = np.flatnonzero(item_steps)
    if len(seen_rows) < 2:
        raise schema.SchemaError(f"events cover {len(seen_rows)} item(s); at least 2 are needed")
    order = _by_count_then_id([ids[r] for r in seen_rows], item_steps[seen_rows].tolist())
    rows = seen_rows[order]
    if catalogue_items:
        available = np.asarray(catalogue.column("available").to_numpy(zero_copy_only=False), bool)
        unseen = np.flatnonzero((item_steps == 0) & available)  # catalogue rows are sorted by id
        rows = np.concatenate([rows, unseen])
    item_of_row = np.full(catalogue.num_rows, schema.OOV_INDEX, np.int64)
    item_of_row[rows] = np.arange(len(rows)) + schema.NUM_RESERVED

    row_category = catalogue.column("category").to_pylist()
    category_steps: dict[str, int] = {}
    for r in rows:
        category_steps[row_category[r]] = category_steps.get(row_category[r], 0) + int(item_steps[r])
    # ties (a new item's category without steps: 0) go by id, like every ranking here
    category_ids = list(category_steps)
    categories = [category_ids[i] for i in _by_count_then_id(category_ids, list(category_steps.values()))]
    category_index = {c: i + schema.NUM_RESERVED for i, c in enumerate(categories)}
    item_category = np.array(
        [schema.PAD_INDEX, schema.OOV_INDEX] + [category_index[row_category[r]] for r in rows], np.int64
    )

    user_ids = [u for u, _ in counts.user_steps]
    user_order = _by_count_then_id(user_ids, [n for _, n in counts.user_steps])
    users = [user_ids[i] for i in user_order]
    reserved = np.zeros(schema.NUM_RESERVED, np.int64)
    return Vocabulary(
        items=[ids[r] for r in rows],
        categories=categories,
        users=users,
        item_of_row=item_of_row,
        item_category=item_category,
        item_steps=np.r_[reserved, item_steps[rows]],
        train_count=np.r_[reserved, train_targets[rows]],
        user_index={u: i + schema.NUM_RESERVED for i, u in enumerate(users)},
        catalogue_rows=rows,
    )


def item_features_table(vocab: Vocabulary, catalogue: pa.Table) -> pa.Table:
    """item_features.parquet: one row per vocabulary item, in index order."""
    rows = pa.array(vocab.catalogue_rows)
    picked = catalogue.take(rows)
    brand = picked.column("brand").fill_null("")
    price = picked.column("price").fill_null(float("nan"))
    return pa.table(
        {
            "item_index": pa.array(np.arange(len(vocab.items)) + schema.NUM_RESERVED, pa.int64()),
            "item_id": picked.column("item_id"),
            "category_index": pa.array(vocab.item_category[schema.NUM_RESERVED :], pa.int64()),
            "category": picked.column("category"),
            "brand": brand,
            "price": price,
            "available": picked.column("available"),
            "train_count": pa.array(vocab.train_count[schema.NUM_RESERVED :], pa.int64()),
        }
    ).select(list(schema.ITEM_FEATURE_COLUMNS))
