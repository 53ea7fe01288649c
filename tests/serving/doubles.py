"""Small deterministic models that satisfy the retrieval and ranking Python APIs (funnel unit tests only)."""

from __future__ import annotations

import numpy as np


class MeanRetriever:
    """Query = mean embedding of the known history items; records the batch sizes it was called with."""

    def __init__(self, item_embeddings: np.ndarray):
        self.item_embeddings = np.asarray(item_embeddings, dtype=np.float32)
        self.calls: list[int] = []
        self.widths: list[int] = []

    def encode(self, hist_items_idx, hist_cats_idx):
        assert hist_items_idx.shape == hist_cats_idx.shape
        self.calls.append(len(hist_items_idx))
        self.widths.append(hist_items_idx.shape[1])
        known = (hist_items_idx >= 2)[..., None]
        total = (self.item_embeddings[hist_items_idx] * known).sum(axis=1)
        return (total / np.maximum(known.sum(axis=1), 1)).astype(np.float32)


class BiasRanker:
    """Score = a fixed per-item bias, so re-ranking reorders retrieval's candidates predictably."""

    def __init__(self, item_bias: np.ndarray, item_category: np.ndarray):
        self.item_bias = np.asarray(item_bias, dtype=np.float32)
        self.item_category = np.asarray(item_category, dtype=np.int64)
        self.calls: list[tuple[int, int]] = []

    def score(self, hist_items_idx, hist_cats_idx, cand_items_idx, cand_cats_idx, behaviour=None):
        assert behaviour is None or behaviour.types.shape == behaviour.gaps.shape == np.shape(hist_items_idx)
        assert hist_items_idx.shape == hist_cats_idx.shape
        assert np.array_equal(cand_cats_idx, self.item_category[cand_items_idx])
        self.calls.append(cand_items_idx.shape)
        return self.item_bias[cand_items_idx]


def random_models(num_items: int, dim: int = 8, num_categories: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(num_items, dim)).astype(np.float32)
    categories = np.concatenate([[0, 1], rng.integers(2, 2 + num_categories, size=num_items - 2)])
    return MeanRetriever(embeddings), BiasRanker(rng.normal(size=num_items), categories)
