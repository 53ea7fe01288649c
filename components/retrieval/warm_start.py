"""Warm start: a new two-tower model that starts from the last blessed one, items matched by id.

The export writes WEIGHTS beside the SavedModels: the raw rows of the id tables (items, categories, brands, price
buckets) with the ids they belong to, and every other weight in the model's order. A warm start builds today's
model on today's vocabulary, then

- copies the row of every item (category, brand) id that the parent knew, wherever today's vocabulary puts it;
- starts a new id's row at zero, so its candidate embedding is its features' (category + brand + price) and its
  first gradient steps move it from there (the feature-based start of a new item);
- copies the towers' other weights (encoder, projection) unchanged, which needs the same architecture (config);
- marks every id the parent trained as known (`id_known`), so an item with no train target today keeps its
  carried row instead of falling back to features alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import schema
from components.retrieval.config import UNRECORDED, RetrievalConfig
from components.retrieval.data import Catalogue
from components.warm_start import (
    WARM_START,
    WEIGHTS,
    WarmStartError,
    architecture_change,
    assign_others,
    carry_rows,
    check_architecture,
    load_arrays,
    others_arrays,
    save_arrays,
)

__all__ = [
    "TRAIN_KEYS",
    "WARM_START",
    "WEIGHTS",
    "Parent",
    "WarmStartError",
    "build",
    "initialise",
    "parent_of",
    "save",
]
# in WEIGHTS: the keys of the train examples the model was trained on (training.example_keys), so that tomorrow's
# warm start can tell the examples of the days after this model's cut from the ones it has seen (config.warm_replay)
TRAIN_KEYS = "train_keys"
# fields of the config that shape the weights: a parent must agree on them
ARCHITECTURE = (
    "encoder",
    "embedding_dim",
    "max_len",
    "num_blocks",
    "num_heads",
    "filter_mix",
    "positions",
    "time_gaps",
)


def _tables(model) -> dict[str, tf.Variable]:
    tower = model.candidate_tower
    return {
        "item": tower.item_embedding.embeddings,
        "category": tower.category_embedding.embeddings,
        "brand": tower.brand_embedding.embeddings,
        "price": tower.price_embedding.embeddings,
    }


def build(model) -> None:
    """Creates every weight of a TwoTowerModel (Keras creates them lazily at the first call)."""
    items = tf.constant([[schema.NUM_RESERVED]], tf.int64)
    model.query_embedding(items, items)
    model.candidate_embedding(tf.constant([schema.NUM_RESERVED], tf.int64))


def _others(model) -> list[tf.Variable]:
    tables = {id(v) for v in _tables(model).values()}
    return [w for w in model.weights if id(w) not in tables]


def save(model, catalogue: Catalogue, directory: str | Path, train_keys: np.ndarray | None = None) -> None:
    """WEIGHTS: id tables with their ids, then the other weights in model order (and TRAIN_KEYS when given)."""
    tables = _tables(model)
    arrays = {f"table_{name}": var.numpy() for name, var in tables.items()}
    arrays["ids_item"] = np.asarray(catalogue.item_ids, dtype=str)
    arrays["ids_category"] = np.asarray(["", "[OOV]"] + list(catalogue.category_ids), dtype=str)
    arrays["ids_brand"] = np.asarray(catalogue.brand_ids, dtype=str)
    arrays["id_known"] = np.asarray(model.candidate_tower.id_weight.numpy()[:, 0] > 0)
    arrays.update(others_arrays(_others(model)))
    if train_keys is not None:
        arrays[TRAIN_KEYS] = np.asarray(train_keys, np.uint64)
    save_arrays(directory, arrays)


@dataclasses.dataclass(frozen=True)
class Parent:
    version: str
    arrays: dict[str, np.ndarray]
    config: dict

    @classmethod
    def load(cls, retrieval_dir: str | Path, version: str = "") -> Parent:
        """The parent retrieval artifact's weights and settings; one from before warm starts (no weights.npz) is
        refused."""
        arrays = load_arrays(retrieval_dir)
        config = schema.RetrievalModelConfig.read(retrieval_dir).config
        return cls(version or Path(retrieval_dir).parent.name, arrays, config)

    @property
    def train_keys(self) -> np.ndarray | None:
        """The keys of the parent's train examples (None: a parent that did not record them)."""
        return self.arrays.get(TRAIN_KEYS)

    def known(self, catalogue: Catalogue) -> np.ndarray:
        """[num_items] bool: today's items whose id row the parent trained."""
        trained = set(self.arrays["ids_item"][self.arrays["id_known"]].tolist())
        return np.array([i in trained for i in catalogue.item_ids.astype(str)], bool)


def initialise(model, catalogue: Catalogue, config: RetrievalConfig, parent: Parent) -> dict:
    """Seeds a built `model` from `parent`; returns what was carried (written as WARM_START)."""
    # a config written before `positions` (`time_gaps`) existed had absolute positions (no gaps)
    check_architecture({**UNRECORDED, **parent.config}, dataclasses.asdict(config), ARCHITECTURE)
    tables = _tables(model)
    a = parent.arrays
    # only the rows the parent trained: an id it held without a train target has its initial row, unused (its id
    # weight 0) and untrained noise; carried, it would be a new item's start instead of zero (its features alone)
    trained_ids = np.where(a["id_known"], a["ids_item"], "")
    carried = carry_rows(tables["item"], a["table_item"], catalogue.item_ids, trained_ids, schema.NUM_RESERVED)
    categories = ["", "[OOV]"] + list(catalogue.category_ids)
    carry_rows(tables["category"], a["table_category"], categories, a["ids_category"], schema.NUM_RESERVED)
    carry_rows(tables["brand"], a["table_brand"], catalogue.brand_ids, a["ids_brand"], 1)
    price = a["table_price"]
    if price.shape == tuple(tables["price"].shape):
        tables["price"].assign(price)
    assign_others(_others(model), a, "tower")
    new_items = int(catalogue.num_items - schema.NUM_RESERVED - carried)
    return {"parent_version": parent.version, "carried_items": carried, "new_items": new_items}


def parent_of(registry_dir: str | Path | None, config: RetrievalConfig | None = None) -> tuple[str | None, str]:
    """(retrieval artifact, version) of the last blessed model that can seed a warm start of `config` (None: any),
    else (None, "") with a warning saying why the run trains from scratch (a parent of another architecture: one
    from before the query tower read time, say)."""
    from components import warm_start

    def usable(artifact: Path) -> str | None:
        if config is None:
            return None
        blessed = {**UNRECORDED, **schema.RetrievalModelConfig.read(artifact).config}
        return architecture_change(blessed, dataclasses.asdict(config), ARCHITECTURE)

    return warm_start.parent_of(registry_dir, "retrieval", usable)
