"""Top-K search over the item embeddings: exact brute force (default) or an approximate HNSW index.

The approximate index runs beside the SavedModel through faiss's NumPy API (ScaNN's TensorFlow ops
need TF 2.20; docs/architecture.md). faiss is optional: it is imported only when an HNSW index is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from components import metrics, schema


class NearestNeighbours(Protocol):
    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item indices [B, k], scores [B, k]), best first; `exclude[b]` are item indices never returned for row b."""


def _top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


class BruteForce:
    """Exact inner-product search over every available item.

    Queries are scored `chunk` rows at a time; by default as many as metrics.chunk_size allows, so a chunk's score
    matrix and the partition's index and copy (~16 bytes a cell, ~0.5 GB) stay the same size whatever the number of
    queries and the catalogue's size (a fixed 2,048 rows was 1.8 GB at Taobao's 55k items and 32 GB at 1M).
    """

    def __init__(self, item_embeddings: np.ndarray, available: np.ndarray, chunk: int | None = None):
        self.item_embeddings = np.asarray(item_embeddings, dtype=np.float32)
        self.unavailable = ~np.asarray(available, dtype=bool)
        self.unavailable[: schema.NUM_RESERVED] = True
        self.chunk = chunk or metrics.chunk_size(len(self.item_embeddings))

    def search(self, queries, k, exclude=None):
        """The top-`k` available items [n, k] of queries [n, D] and their scores, exact, chunked to bound memory."""
        k = min(k, int((~self.unavailable).sum()))
        indices, scores = [], []
        for start in range(0, len(queries), self.chunk):
            block = queries[start : start + self.chunk] @ self.item_embeddings.T
            block[:, self.unavailable] = -np.inf
            if exclude is not None:
                for row, items in enumerate(exclude[start : start + self.chunk]):
                    block[row, items] = -np.inf
            top, top_scores = _top_k_rows(block, k)
            indices.append(top)
            scores.append(top_scores)
        if not indices:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(indices).astype(np.int64), np.concatenate(scores)


class HNSW:
    """Approximate inner-product search (faiss HNSW) over the available items.

    It asks for k plus the longest exclusion list, then drops excluded items, so exclusions never
    shorten the answer below k while the catalogue has enough items.
    """

    def __init__(
        self,
        item_embeddings: np.ndarray,
        available: np.ndarray,
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
    ):
        import faiss  # optional dependency; see the module docstring

        available = np.asarray(available, dtype=bool).copy()
        available[: schema.NUM_RESERVED] = False
        self.item_index = np.flatnonzero(available)
        self.index = faiss.IndexHNSWFlat(item_embeddings.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.hnsw.efSearch = ef_search
        self.index.add(np.ascontiguousarray(item_embeddings[self.item_index], dtype=np.float32))

    def search(self, queries, k, exclude=None):
        """The approximate top-`k` available items [n, k] of queries [n, D] and their scores; -1 where fewer exist."""
        k = min(k, len(self.item_index))
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        fetch = min(k + extra, len(self.item_index))
        scores, positions = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
        indices = np.where(positions >= 0, self.item_index[np.maximum(positions, 0)], -1)
        out_indices = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row in range(len(queries)):
            keep = indices[row] >= 0
            if exclude is not None:
                keep &= ~np.isin(indices[row], exclude[row])
            chosen = np.flatnonzero(keep)[:k]
            out_indices[row, : len(chosen)] = indices[row, chosen]
            out_scores[row, : len(chosen)] = scores[row, chosen]
        return out_indices, out_scores


def recall_at_k(exact: np.ndarray, approximate: np.ndarray) -> float:
    """Share of the exact top-K that the approximate top-K also returns, averaged over queries."""
    hits = [len(np.intersect1d(e, a)) / max(len(e), 1) for e, a in zip(exact, approximate)]
    return float(np.mean(hits)) if hits else 0.0
