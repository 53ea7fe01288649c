"""The Python API over a retrieval model artifact, for evaluation, export and the funnel.

retriever = load_retriever(model_dir)                  # load_valid_retriever(model_dir) to score the valid split
queries = retriever.encode(hist_items_idx, hist_cats_idx)      # [B, D]
items, scores = retriever.top_k(hist_items_idx, hist_cats_idx, k=200)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf

from components import schema
from components.retrieval import export
from components.retrieval.config import RetrievalConfig
from components.retrieval.index import BruteForce, NearestNeighbours


class Retriever:
    """A loaded query encoder plus the item embedding matrix (row = vocabulary index; rows PAD and OOV are zero)."""

    def __init__(self, model_dir: str | Path, nearest_neighbours: NearestNeighbours | None = None):
        model_dir = Path(model_dir)
        for part in (export.QUERY_ENCODER, export.ITEM_EMBEDDINGS, export.ITEM_INFO):
            if not (model_dir / part).exists():
                raise FileNotFoundError(f"{model_dir}: no {part}; is this a retrieval model artifact?")
        self.config = RetrievalConfig.read(model_dir)
        self._encoder = tf.saved_model.load(str(model_dir / export.QUERY_ENCODER))
        self.item_embeddings, self.item_ids = _read_item_embeddings(model_dir / export.ITEM_EMBEDDINGS)
        info = pq.read_table(model_dir / export.ITEM_INFO).to_pandas()
        self.available = np.zeros(len(self.item_ids), dtype=bool)
        self.available[info["item_index"].to_numpy()] = info["available"].to_numpy()
        self.item_category = np.zeros(len(self.item_ids), dtype=np.int64)
        self.item_category[info["item_index"].to_numpy()] = info["category_index"].to_numpy()
        self.item_category[schema.OOV_INDEX] = schema.OOV_INDEX
        self.index = nearest_neighbours or BruteForce(self.item_embeddings, self.available)

    @property
    def num_items(self) -> int:
        """The item vocabulary size, reserved rows included (rows of item_embeddings)."""
        return len(self.item_ids)

    @property
    def reads_gaps(self) -> bool:
        """Whether the query tower reads the history's time (config.time_gaps): then pass `behaviour` to encode."""
        return bool(self.config.time_gaps)

    def encode(
        self, hist_items_idx: np.ndarray, hist_cats_idx: np.ndarray, batch_size: int = 4096, behaviour=None
    ) -> np.ndarray:
        """Query embeddings [B, D] for histories of vocabulary indices, left-padded with 0. `behaviour`
        (serving.funnel.Behaviour aligned with the histories, or None: unknown) gives a model that reads
        time its steps' gaps and the request gap; a model that does not ignores it."""
        hist_items_idx = np.asarray(hist_items_idx, dtype=np.int64)
        hist_cats_idx = np.asarray(hist_cats_idx, dtype=np.int64)
        if hist_items_idx.ndim != 2 or hist_items_idx.shape != hist_cats_idx.shape:
            raise ValueError(
                f"histories must be two equal [B, L] matrices; got {hist_items_idx.shape}, {hist_cats_idx.shape}"
            )
        if hist_items_idx.size and (hist_items_idx.min() < 0 or hist_items_idx.max() >= self.num_items):
            raise ValueError(f"history item index outside the vocabulary [0, {self.num_items})")
        gaps = None
        if behaviour is not None and self.reads_gaps:
            gaps = np.asarray(behaviour.gaps, np.int64), np.asarray(behaviour.request_gap, np.int64)
            if gaps[0].shape != hist_items_idx.shape or gaps[1].shape != hist_items_idx.shape[:1]:
                raise ValueError(f"gaps of shape {gaps[0].shape}, {gaps[1].shape} for histories {hist_items_idx.shape}")
        encode = self._encoder.signatures[export.ENCODE_WITH_GAPS if gaps else "encode_indices"]
        parts = []
        for i in range(0, max(len(hist_items_idx), 1), batch_size):
            rows = slice(i, i + batch_size)
            inputs = {"hist_items": tf.constant(hist_items_idx[rows]), "hist_cats": tf.constant(hist_cats_idx[rows])}
            if gaps:
                inputs.update(hist_gaps=tf.constant(gaps[0][rows]), request_gap=tf.constant(gaps[1][rows]))
            parts.append(encode(**inputs)["embedding"].numpy())
        return np.concatenate(parts)[: len(hist_items_idx)]

    def top_k(
        self,
        hist_items_idx: np.ndarray,
        hist_cats_idx: np.ndarray,
        k: int,
        exclude_history: bool = True,
        behaviour=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item indices [B, k], scores [B, k]) of the best available items, the history's items excluded."""
        queries = self.encode(hist_items_idx, hist_cats_idx, behaviour=behaviour)
        exclude = [row[row >= schema.NUM_RESERVED] for row in np.asarray(hist_items_idx)] if exclude_history else None
        return self.index.search(queries, k, exclude)


def _read_item_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    index = table.column("item_index").to_numpy()
    if not np.array_equal(index, np.arange(schema.NUM_RESERVED, schema.NUM_RESERVED + len(index))):
        raise ValueError(f"{path}: item_index must run {schema.NUM_RESERVED}.. in row order")
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    matrix = np.zeros((len(index) + schema.NUM_RESERVED, vectors.shape[1]), dtype=np.float32)
    matrix[schema.NUM_RESERVED :] = vectors
    ids = np.concatenate([["", "[OOV]"], table.column("item_id").to_numpy(zero_copy_only=False)]).astype(object)
    return matrix, ids


def load_retriever(model_dir: str | Path, nearest_neighbours: NearestNeighbours | None = None) -> Retriever:
    """The retrieval artifact in `model_dir` as a Retriever (exact search unless `nearest_neighbours` is given)."""
    return Retriever(model_dir, nearest_neighbours)


def load_valid_retriever(model_dir: str | Path) -> Retriever:
    """The retriever to score the valid split with: a model refit through valid has trained on the valid targets, so
    on valid its scores of them are inflated and a choice made there (the funnel's fusion weight) would favour it;
    its artifact keeps the selected model, which never saw them (export.SELECTED). Without a refit, the model itself."""
    selected = Path(model_dir, export.SELECTED)
    return Retriever(selected if selected.is_dir() else model_dir)
