"""Writes the retrieval model artifact (docs/architecture.md, contracts): query_encoder/ and index/ SavedModels on raw
string ids, item_embeddings.parquet, and the config and vocabularies the Python API reads back; after a refit through
valid, selected/ holds the selected model's parts for scoring the valid split (model_io.load_valid_retriever).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from components import atomic, schema
from components.retrieval.config import CONFIG_FILE, RetrievalConfig
from components.retrieval.data import Catalogue
from components.retrieval.model import TwoTowerModel

QUERY_ENCODER = "query_encoder"
INDEX = "index"
ITEM_EMBEDDINGS = "item_embeddings.parquet"
ITEM_INFO = "items.parquet"  # item_index, item_id, category_index, available: what load_retriever needs
CATEGORY_VOCAB = "categories.jsonl"
# after a refit through valid, the selected model's query encoder, embeddings and item info, for what is chosen on valid
SELECTED = "selected"
DEFAULT_TOP_K = 100

STRING_HISTORY = [
    tf.TensorSpec([None, None], tf.string, name="hist_items"),
    tf.TensorSpec([None, None], tf.string, name="hist_cats"),
]
INDEX_HISTORY = [
    tf.TensorSpec([None, None], tf.int64, name="hist_items"),
    tf.TensorSpec([None, None], tf.int64, name="hist_cats"),
]
# the time of a history (config.time_gaps): seconds from each step's previous step, aligned with hist_items
# (schema.NO_GAP = -1: none or unknown), and from the newest step to the request
GAPS = [tf.TensorSpec([None, None], tf.int64, name="hist_gaps"), tf.TensorSpec([None], tf.int64, name="request_gap")]
ENCODE_WITH_GAPS = "encode_with_gaps"  # the query signature on indices and gaps, beside encode_indices


def left_align(hist_items, hist_cats, hist_gaps=None):
    """Moves the padding (index 0) of each row to the left, keeping the order of the real steps.

    Clients may pad on either side; the query tower reads the newest step in the last column.
    A step whose category is missing reads its category as OOV rather than as padding.
    `hist_gaps` (or None) moves with the items, a padded step's gap NO_GAP; it is returned third when given.
    """
    present = tf.not_equal(hist_items, schema.PAD_INDEX)
    order = tf.argsort(tf.cast(present, tf.int32), axis=1, stable=True)
    hist_items = tf.gather(hist_items, order, batch_dims=1)
    hist_cats = tf.gather(hist_cats, order, batch_dims=1)
    present = tf.gather(present, order, batch_dims=1)
    missing_cat = tf.logical_and(present, tf.equal(hist_cats, schema.PAD_INDEX))
    aligned = hist_items, tf.where(missing_cat, tf.constant(schema.OOV_INDEX, tf.int64), hist_cats)
    if hist_gaps is None:
        return aligned
    hist_gaps = tf.gather(hist_gaps, order, batch_dims=1)
    return (*aligned, tf.where(present, hist_gaps, tf.constant(schema.NO_GAP, tf.int64)))


class QueryEncoder(tf.Module):
    """History of raw ids (or vocabulary indices) -> query embedding; unknown ids read as OOV."""

    def __init__(self, model: TwoTowerModel, catalogue: Catalogue):
        super().__init__()
        self.model = model
        self.item_lookup = tf.keras.layers.StringLookup(
            vocabulary=list(catalogue.item_ids[schema.NUM_RESERVED :]), mask_token="", num_oov_indices=1
        )
        self.category_lookup = tf.keras.layers.StringLookup(
            vocabulary=catalogue.category_ids, mask_token="", num_oov_indices=1
        )

    @tf.function(input_signature=INDEX_HISTORY)
    def encode_indices(self, hist_items, hist_cats):
        """{"embedding": [B, D]}: the query of histories of vocabulary indices [B, L] (padding on either side)."""
        return {"embedding": self.model.query_embedding(*left_align(hist_items, hist_cats))}

    @tf.function(input_signature=INDEX_HISTORY + GAPS)
    def encode_with_gaps(self, hist_items, hist_cats, hist_gaps, request_gap):
        """{"embedding": [B, D]}: `encode_indices` with each step's gap [B, L] and the request gap [B], in seconds
        (a model without config.time_gaps ignores them)."""
        hist_items, hist_cats, hist_gaps = left_align(hist_items, hist_cats, hist_gaps)
        return {
            "embedding": self.model.query_embedding(hist_items, hist_cats, hist_gaps=hist_gaps, request_gap=request_gap)
        }

    @tf.function(input_signature=STRING_HISTORY + GAPS)
    def serve_with_gaps(self, hist_items, hist_cats, hist_gaps, request_gap):
        """`serve` with each step's gap and the request gap, in seconds: {"embedding": [B, D]}."""
        return self.encode_with_gaps(*self.indices(hist_items, hist_cats), hist_gaps, request_gap)

    @tf.function(input_signature=STRING_HISTORY)
    def indices(self, hist_items, hist_cats):
        """The vocabulary indices [B, L] of raw string ids [B, L] ("" padding, unknown ids OOV)."""
        return self.item_lookup(hist_items), self.category_lookup(hist_cats)

    @tf.function(input_signature=STRING_HISTORY)
    def serve(self, hist_items, hist_cats):
        """The serving signature: {"embedding": [B, D]} for histories of raw string ids [B, L]."""
        return self.encode_indices(*self.indices(hist_items, hist_cats))


class BruteForceIndex(tf.Module):
    """History -> top-K available items by exact dot product, excluding the items in the history."""

    def __init__(self, encoder: QueryEncoder, item_embeddings: np.ndarray, catalogue: Catalogue, k: int):
        super().__init__()
        self.encoder = encoder
        self.item_embeddings = tf.constant(item_embeddings, tf.float32)
        self.item_ids = tf.constant(catalogue.item_ids.astype(str))
        self.unavailable = tf.constant(~catalogue.available)
        self.k = min(k, int(catalogue.available.sum()))

    @tf.function(input_signature=STRING_HISTORY)
    def serve(self, hist_items, hist_cats):
        """The serving signature: {"item_ids", "scores": [B, K]}, the top-K available items of histories [B, L] (raw
        ids), the history's items excluded."""
        item_index, cat_index = self.encoder.indices(hist_items, hist_cats)
        queries = self.encoder.encode_indices(item_index, cat_index)["embedding"]
        scores = tf.matmul(queries, self.item_embeddings, transpose_b=True)
        scores = tf.where(self.unavailable[tf.newaxis], tf.constant(-np.inf, tf.float32), scores)
        seen = tf.where(item_index >= schema.NUM_RESERVED)  # [n, 2] (row, column) of known history items
        seen_cells = tf.stack([seen[:, 0], tf.gather_nd(item_index, seen)], axis=1)
        scores = tf.tensor_scatter_nd_update(
            scores, seen_cells, tf.fill([tf.shape(seen_cells)[0]], tf.constant(-np.inf, tf.float32))
        )
        top = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.item_ids, top.indices), "scores": top.values}


def item_embedding_table(item_embeddings: np.ndarray, catalogue: Catalogue) -> pa.Table:
    """item_embeddings.parquet: each vocabulary item's id, index and embedding (reserved rows left out)."""
    rows = slice(schema.NUM_RESERVED, None)
    return pa.table(
        {
            "item_id": pa.array(catalogue.item_ids[rows].astype(str), pa.string()),
            "item_index": pa.array(np.arange(schema.NUM_RESERVED, catalogue.num_items), pa.int64()),
            "embedding": pa.array(list(item_embeddings[rows].astype(np.float32)), pa.list_(pa.float32())),
        }
    )


TRAINING_HISTORY = "training_history.json"


def item_info_table(catalogue: Catalogue) -> pa.Table:
    """item_info.parquet: each vocabulary item's index, id, category index and availability, for the loaders."""
    rows = slice(schema.NUM_RESERVED, None)
    return pa.table(
        {
            "item_index": pa.array(np.arange(schema.NUM_RESERVED, catalogue.num_items), pa.int64()),
            "item_id": pa.array(catalogue.item_ids[rows].astype(str), pa.string()),
            "category_index": pa.array(catalogue.item_category[rows], pa.int64()),
            "available": pa.array(catalogue.available[rows], pa.bool_()),
        }
    )


def export(
    model: TwoTowerModel,
    catalogue: Catalogue,
    config: RetrievalConfig,
    output_dir: str | Path,
    k: int = DEFAULT_TOP_K,
    history: list[dict] | None = None,
    warm_start: dict | None = None,
    train_keys=None,
    selected: tuple[TwoTowerModel, Catalogue] | None = None,
) -> Path:
    """Writes the whole artifact through atomic.staged_directory, so a crash leaves no half model.
    `history` (per-epoch loss and valid metrics) goes to training_history.json for the evaluation report;
    `train_keys` (training.example_keys of the train examples) into WEIGHTS for tomorrow's warm start;
    `selected` (TrainingResult.selected: the model before its refit through valid) into SELECTED."""
    output_dir = Path(output_dir)
    with atomic.staged_directory(output_dir, last=CONFIG_FILE) as staging:
        encoder = _write_scoring_parts(model, catalogue, staging)
        index = BruteForceIndex(encoder, model.item_embeddings(), catalogue, k)
        tf.saved_model.save(index, str(staging / INDEX), signatures={"serving_default": index.serve})
        if selected is not None:
            _write_scoring_parts(*selected, staging / SELECTED)
            config.write(staging / SELECTED)
        if history is not None:
            atomic.write_json(staging / TRAINING_HISTORY, {"epochs": history})
        from components.retrieval import warm_start as warm

        warm.save(model, catalogue, staging, train_keys)
        if warm_start is not None:
            atomic.write_json(staging / warm.WARM_START, warm_start)
        config.write(staging)
    return output_dir


def _write_scoring_parts(model: TwoTowerModel, catalogue: Catalogue, directory: Path) -> QueryEncoder:
    """What model_io.Retriever reads besides the config: query encoder, item embeddings and info, categories."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder = QueryEncoder(model, catalogue)
    tf.saved_model.save(
        encoder,
        str(directory / QUERY_ENCODER),
        signatures={
            "serving_default": encoder.serve,
            "encode_indices": encoder.encode_indices,
            ENCODE_WITH_GAPS: encoder.encode_with_gaps,
            "serve_with_gaps": encoder.serve_with_gaps,
        },
    )
    pq.write_table(item_embedding_table(model.item_embeddings(), catalogue), directory / ITEM_EMBEDDINGS)
    pq.write_table(item_info_table(catalogue), directory / ITEM_INFO)
    schema.write_vocab(directory, CATEGORY_VOCAB, catalogue.category_ids)
    return encoder
