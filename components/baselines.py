"""The two baselines every run reports beside the models: popularity and item-to-item transitions.

Both are fitted on the training sequences only and score the full catalogue for a batch of
histories, exactly like a model, so they go through the same `metrics` code and protocol.
On Amazon data item-to-item is strong; a deep model must beat it to earn its cost (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from components import metrics, schema

# A tiny popularity term breaks ties among items the transitions say nothing about, so a user
# whose last items have few successors still gets a sensible list. It is far below one count.
POPULARITY_TIEBREAK = 1e-6


@dataclasses.dataclass(frozen=True)
class TrainingSequences:
    """What the baselines learn from: every next-item step of the train split."""

    previous: np.ndarray  # int64 [n]: the last history item of each train example
    next: np.ndarray  # int64 [n]: its target
    first: np.ndarray  # int64 [users]: each user's first item (never a target, still an occurrence)
    num_items: int

    @classmethod
    def from_examples(cls, hist_items: Sequence[np.ndarray], targets: np.ndarray, num_items: int) -> TrainingSequences:
        """From train retrieval examples (history oldest first). An example with a history of one item
        is a user's first step, so its history item is the sequence's first occurrence."""
        lengths = np.fromiter((len(h) for h in hist_items), dtype=np.int64, count=len(hist_items))
        if (lengths == 0).any():
            raise ValueError("train examples must have a non-empty history")
        last = np.fromiter((h[-1] for h in hist_items), dtype=np.int64, count=len(hist_items))
        return cls.from_last_items(last, lengths, targets, num_items)

    @classmethod
    def from_last_items(
        cls, last: np.ndarray, lengths: np.ndarray, targets: np.ndarray, num_items: int
    ) -> TrainingSequences:
        """From each train example's last history item, history length and target: all the baselines read."""
        last, targets = np.asarray(last, dtype=np.int64), np.asarray(targets, dtype=np.int64)
        if (np.asarray(lengths) == 0).any():
            raise ValueError("train examples must have a non-empty history")
        first = last[np.asarray(lengths) == 1]
        for name, values in (("history", last), ("target", targets)):
            if len(values) and (values.min() < schema.NUM_RESERVED or values.max() >= num_items):
                raise ValueError(f"{name} item index outside the vocabulary [{schema.NUM_RESERVED}, {num_items})")
        return cls(previous=last, next=targets, first=first, num_items=num_items)


def item_counts(train: TrainingSequences) -> np.ndarray:
    """How often each item occurs in the training sequences (float64 [num_items])."""
    return np.bincount(np.concatenate([train.next, train.first]), minlength=train.num_items).astype(np.float64)


class Popularity:
    """Every user gets the same list: the items most frequent in training."""

    name = "popularity"

    def __init__(self, train: TrainingSequences):
        self.num_items = train.num_items
        self.counts = item_counts(train).astype(np.float32)

    def score(self, hist_items: Sequence[np.ndarray]) -> np.ndarray:
        """Scores [users, num_items]: the train counts broadcast to every user (a view, no copy per user)."""
        return np.broadcast_to(self.counts, (len(hist_items), self.num_items))


class ItemToItem:
    """Scores item j for a user by the transitions (i -> j) out of the user's last `window` items.

    score(j) = sum_l decay**l * P(j | i_l), l = 0 for the most recent item. Transition rows are
    normalised to probabilities so a popular history item does not drown out the others. The
    transition matrix is sparse (CSR in plain NumPy): a dense one would not fit large catalogues.
    """

    name = "item_to_item"

    def __init__(self, train: TrainingSequences, window: int = 5, decay: float = 0.6):
        if window < 1 or not 0 < decay <= 1:
            raise ValueError(f"window must be >= 1 and decay in (0, 1]; got {window}, {decay}")
        self.num_items, self.window, self.decay = train.num_items, window, decay
        pair = train.previous * train.num_items + train.next
        unique_pairs, counts = np.unique(pair, return_counts=True)
        rows, self.cols = np.divmod(unique_pairs, train.num_items)
        out_degree = np.bincount(rows, weights=counts, minlength=train.num_items)
        self.values = (counts / out_degree[rows]).astype(np.float32)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=train.num_items))])
        popularity = item_counts(train)
        self.tiebreak = (POPULARITY_TIEBREAK * popularity / max(popularity.max(), 1.0)).astype(np.float32)

    def score(self, hist_items: Sequence[np.ndarray]) -> np.ndarray:
        """Scores [users, num_items]: the weighted transitions out of each user's last `window` history items."""
        users, items, weights = self._recent_items(hist_items)
        starts, ends = self.indptr[items], self.indptr[items + 1]
        lengths = ends - starts
        # expand every (user, history item) into the nonzeros of that item's transition row
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        nonzero = np.repeat(starts, lengths) + offsets
        flat = np.repeat(users, lengths) * self.num_items + self.cols[nonzero]
        contribution = self.values[nonzero] * np.repeat(weights, lengths)
        scores = np.bincount(flat, weights=contribution, minlength=len(hist_items) * self.num_items)
        return scores.reshape(len(hist_items), self.num_items).astype(np.float32) + self.tiebreak

    def _recent_items(self, hist_items: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user row, item, decay weight) for the last `window` known items of each history."""
        users, items, weights = [], [], []
        for row, history in enumerate(hist_items):
            recent = np.asarray(history, dtype=np.int64)[::-1]
            recent = recent[(recent >= schema.NUM_RESERVED) & (recent < self.num_items)][: self.window]
            users.append(np.full(len(recent), row))
            items.append(recent)
            weights.append(self.decay ** np.arange(len(recent)))
        if not users:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(users), np.concatenate(items), np.concatenate(weights)


def evaluate(model, hist_items: Sequence[np.ndarray], targets: np.ndarray, seen: Sequence[np.ndarray]) -> metrics.Ranks:
    """Target ranks of a baseline under the full-catalogue protocol, chunk by chunk."""
    return metrics.ranks_in_chunks(
        lambda start, stop: model.score(hist_items[start:stop]), targets, seen, model.num_items
    )


def from_features(features_dir: str | Path) -> TrainingSequences:
    """The training sequences from a features output directory (its retrieval train split), read batch by batch
    keeping three integers per example (last history item, history length, target): the whole split with its
    histories (load_numpy) held ~2 KB an example, ~14 GB for the large preset's 7M train examples."""
    from components.features import reader  # TensorFlow: imported only when reading TFRecords

    spec = schema.FeatureSpec.read(features_dir)
    columns = (schema.HIST_ITEMS, schema.TARGET_ITEM)
    last, lengths, targets = [], [], []
    for batch in reader.dataset(features_dir, schema.RETRIEVAL_DIR, "train", 8192, columns):
        hist = batch[schema.HIST_ITEMS]
        row_lengths, ends = hist.row_lengths().numpy(), hist.row_limits().numpy()
        values = hist.flat_values.numpy()
        last.append(values[np.maximum(ends - 1, 0)] if len(values) else np.zeros(len(ends), np.int64))
        lengths.append(row_lengths)
        targets.append(batch[schema.TARGET_ITEM].numpy())
    if not last:
        return TrainingSequences.from_last_items(np.zeros(0), np.zeros(0), np.zeros(0), spec.num_items)
    return TrainingSequences.from_last_items(
        np.concatenate(last), np.concatenate(lengths), np.concatenate(targets), spec.num_items
    )


def baseline_metrics(features_dir: str | Path, split: str = "test", max_users: int = 0) -> dict[str, dict[str, float]]:
    """`baselines.popularity` and `baselines.item_to_item` of the bench JSON, on one split; with `max_users`, on the
    users whose ids hash lowest (metrics.sample_users: the sample evaluation's max_users scores), as full-catalogue
    scoring costs users x items."""
    from components.features import reader

    train = from_features(features_dir)
    data = reader.load_numpy(features_dir, schema.RETRIEVAL_DIR, split)
    if max_users:
        user_ids = schema.indexed_vocab(features_dir, schema.USER_VOCAB)
        rows = metrics.sample_users(user_ids[data[schema.USER]], max_users)
        data = {name: column[rows] for name, column in data.items()}
    out = {}
    for model in (Popularity(train), ItemToItem(train)):
        ranks = evaluate(model, data[schema.HIST_ITEMS], data[schema.TARGET_ITEM], data[schema.SEEN_ITEMS])
        out[model.name] = metrics.ranking_metrics(ranks)
    return out


def category_popularity_top_k(
    last_items: np.ndarray,
    seen: Sequence[np.ndarray],
    item_category: np.ndarray,
    counts: np.ndarray,
    available: np.ndarray,
    k: int = 20,
) -> np.ndarray:
    """The cold-start baseline for new items, popularity within the category: per row, the items of the last
    history item's category first, by train count, an item without one counting its category's mean count;
    then every other item by train count. Seen, unavailable and reserved items are left out. [n, k] indices."""
    counts = np.asarray(counts, np.float64)
    estimate = counts.copy()
    for category in np.unique(item_category[schema.NUM_RESERVED :]):
        members = item_category == category
        known = members & (counts > 0)
        estimate[members & (counts == 0)] = counts[known].mean() if known.any() else 0.0
    estimate[: schema.NUM_RESERVED] = -np.inf
    estimate[~np.asarray(available, bool)] = -np.inf
    top = max(estimate[np.isfinite(estimate)].max(initial=0.0), 0.0) + 1.0
    k = min(k, len(counts) - schema.NUM_RESERVED)
    lists = np.empty((len(last_items), k), np.int64)
    for row, last in enumerate(last_items):
        scores = estimate + top * (item_category == item_category[last])
        scores[np.asarray(seen[row], np.int64)] = -np.inf
        pick = np.argpartition(-scores, k - 1)[:k]
        lists[row] = pick[np.argsort(-scores[pick], kind="stable")]
    return lists
