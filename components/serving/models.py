"""A servable pair of models with its own item vocabulary, and the mapping of ids into it.

The last blessed model was trained on an older features output, so its vocabulary indices differ
from today's. Serving it on today's histories goes through item ids: today's index -> item id ->
the model's index (OOV when the model never saw the item).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from components import schema
from components.serving.funnel import Ranker, Retriever

ITEM_EMBEDDINGS = "item_embeddings.parquet"


@dataclasses.dataclass
class ServingModel:
    """The two stage models that answer together, with the item ids of the vocabulary they were trained on."""

    retriever: Retriever
    ranker: Ranker
    item_ids: np.ndarray  # str [num_items]: the model's index -> item id ("" at reserved indices)
    version: str

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


def load_serving_model(retrieval_dir: str | Path, ranking_dir: str | Path, version: str) -> ServingModel:
    """Loads both stage artifacts through their Python APIs and reads the retrieval vocabulary."""
    from components.ranking.export import load_ranker
    from components.retrieval.model_io import load_retriever

    retriever = load_retriever(str(retrieval_dir))
    ranker = load_ranker(str(ranking_dir))
    item_ids = read_model_item_ids(retrieval_dir, retriever.item_embeddings.shape[0])
    if len(ranker.item_category) != len(item_ids):
        raise schema.SchemaError(
            f"ranker knows {len(ranker.item_category)} items but the retriever {len(item_ids)}: "
            "the two models come from different features outputs"
        )
    return ServingModel(retriever=retriever, ranker=ranker, item_ids=item_ids, version=version)


def read_model_item_ids(retrieval_dir: str | Path, num_items: int) -> np.ndarray:
    """The retrieval artifact's index -> item id table, from its item_embeddings.parquet."""
    path = Path(retrieval_dir, ITEM_EMBEDDINGS)
    if not path.exists():
        raise schema.SchemaError(f"{retrieval_dir}: no {ITEM_EMBEDDINGS}; is this a retrieval model artifact?")
    table = pq.read_table(path, columns=["item_id", "item_index"])
    index = table.column("item_index").to_numpy()
    if len(index) and (index.min() < schema.NUM_RESERVED or index.max() >= num_items):
        raise schema.SchemaError(f"{path}: item_index outside [{schema.NUM_RESERVED}, {num_items})")
    if len(np.unique(index)) != len(index):
        raise schema.SchemaError(f"{path}: duplicate item_index values")
    item_ids = np.full(num_items, "", dtype=object)
    item_ids[index] = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    return item_ids


def index_map(source_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """int64 [len(source_ids)]: each source index's index in the target vocabulary (OOV if absent).

    Both arrays are index -> item id with reserved entries at 0 and 1, which map to themselves.
    """
    lookup = {item: i for i, item in enumerate(target_ids[schema.NUM_RESERVED :], start=schema.NUM_RESERVED)}
    mapped = np.fromiter(
        (lookup.get(item, schema.OOV_INDEX) for item in source_ids[schema.NUM_RESERVED :]),
        dtype=np.int64,
        count=max(0, len(source_ids) - schema.NUM_RESERVED),
    )
    return np.concatenate([np.arange(schema.NUM_RESERVED, dtype=np.int64), mapped])


def check_layout(model: ServingModel, item_ids: np.ndarray, reader: str) -> None:
    """Training-serving skew: the model a run trained must read the item vocabulary (the features output's
    layout) it was trained on; `reader` (export, server) refuses to serve it from another one. A control model from
    an earlier run is mapped by id instead (index_map) and is not checked here."""
    if same_vocabulary(np.asarray(item_ids, dtype=object), np.asarray(model.item_ids, dtype=object)):
        return
    ours, theirs = np.asarray(item_ids[schema.NUM_RESERVED :]), np.asarray(model.item_ids[schema.NUM_RESERVED :])
    if len(ours) != len(theirs):
        why = f"{len(theirs)} items in the model's vocabulary, {len(ours)} in the one {reader} reads"
    else:
        first = int(np.flatnonzero(ours != theirs)[0])
        why = f"index {first + schema.NUM_RESERVED} is {theirs[first]!r} in the model, {ours[first]!r} in {reader}'s"
    raise schema.SchemaError(
        f"training-serving skew: model {model.version} was trained on another feature layout than {reader} reads "
        f"({why}); {reader} refuses to serve it"
    )


def same_vocabulary(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool(np.all(a[schema.NUM_RESERVED :] == b[schema.NUM_RESERVED :]))
