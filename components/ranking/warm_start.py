"""Warm start of DIEN / DIN from the last blessed ranker, items and categories by id (components.warm_start).

The ranking artifact writes WEIGHTS beside its SavedModel: the item and category embedding tables with the ids of
their rows, and every other weight that training learns, in model order. A warm start builds today's model on
today's vocabulary, copies the row of every item (category) id the parent knew wherever today's vocabulary puts
it, starts a new id's row at zero (the head then sees a new item by its category row and its context features),
and copies the other weights unchanged, which needs the same architecture (ModelConfig). The context features'
statistics (context.CandidateContext) are today's counts, never the parent's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from components import schema
from components.ranking.base import ModelConfig, SequenceRanker
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

__all__ = ["WARM_START", "WEIGHTS", "Parent", "WarmStartError", "initialise", "parent_of", "save"]
INFO = "ranker.json"  # export.INFO (export imports this module)
# every ModelConfig field shapes the weights or what they mean
ARCHITECTURE = tuple(field.name for field in dataclasses.fields(ModelConfig))


def _tables(model: SequenceRanker) -> dict:
    """The id tables by name: the item and the category embeddings."""
    return {"item": model.embedding.items.embeddings, "category": model.embedding.categories.embeddings}


def _others(model: SequenceRanker) -> list:
    """The learned weights other than the id tables (the context's statistics excluded: today's counts)."""
    skip = {id(v) for v in _tables(model).values()}
    if model.context is not None:
        skip |= {id(v) for v in model.context.weights}
    return [w for w in model.weights if id(w) not in skip]


def vocabularies(features_dir: str | Path) -> dict[str, list[str]]:
    """Row ids of the item and category tables: "" (padding), "[OOV]", then the vocabulary."""
    reserved = ["", "[OOV]"]
    return {
        "item": reserved + schema.read_vocab(features_dir, schema.ITEM_VOCAB),
        "category": reserved + schema.read_vocab(features_dir, schema.CATEGORY_VOCAB),
    }


def save(model: SequenceRanker, features_dir: str | Path, directory: str | Path) -> None:
    """WEIGHTS: the id tables with their ids, then the other learned weights in model order."""
    arrays = {f"table_{name}": var.numpy() for name, var in _tables(model).items()}
    for name, ids in vocabularies(features_dir).items():
        arrays[f"ids_{name}"] = np.asarray(ids, dtype=str)
    arrays.update(others_arrays(_others(model)))
    save_arrays(directory, arrays)


@dataclasses.dataclass(frozen=True)
class Parent:
    version: str
    arrays: dict[str, np.ndarray]
    config: dict  # the parent's ModelConfig

    @classmethod
    def load(cls, ranking_dir: str | Path, version: str = "") -> Parent:
        """The parent ranking artifact's weights and model configuration; one without WEIGHTS is refused."""
        arrays = load_arrays(ranking_dir)
        config = json.loads(Path(ranking_dir, INFO).read_text())["model_config"]
        return cls(version or Path(ranking_dir).parent.name, arrays, config)


def initialise(model: SequenceRanker, features_dir: str | Path, parent: Parent) -> dict:
    """Seeds a built `model` from `parent`; returns what was carried (ranker.json's warm_start)."""
    current = json.loads(json.dumps(dataclasses.asdict(model.config)))  # tuples as the parent's JSON lists
    check_architecture(parent.config, current, ARCHITECTURE)
    tables, ids, a = _tables(model), vocabularies(features_dir), parent.arrays
    carried = carry_rows(tables["item"], a["table_item"], ids["item"], a["ids_item"], schema.NUM_RESERVED)
    carry_rows(tables["category"], a["table_category"], ids["category"], a["ids_category"], schema.NUM_RESERVED)
    assign_others(_others(model), a, "ranker")
    new_items = len(ids["item"]) - schema.NUM_RESERVED - carried
    return {"parent_version": parent.version, "carried_items": carried, "new_items": new_items}


def parent_of(registry_dir: str | Path | None, model_type: str) -> tuple[str | None, str]:
    """(ranking artifact, version) of the last blessed ranker when it is a `model_type` of the stage's architecture
    with WEIGHTS, else (None, "") with a warning (the registry blesses DIEN, so the DIN baseline trains from
    scratch; so does a run after the architecture changed)."""
    from components import warm_start

    def usable(artifact: Path) -> str | None:
        info = json.loads(Path(artifact, INFO).read_text())
        blessed = info.get("model_config", {})
        if blessed.get("model_type") != model_type:
            return f"is a {blessed.get('model_type')}, not a {model_type}"
        # the stage trains ModelConfig's defaults: a parent of another architecture (one from before the behaviour
        # features, say) cannot seed it
        current = json.loads(json.dumps(dataclasses.asdict(ModelConfig(model_type=model_type))))
        return architecture_change(blessed, current, ARCHITECTURE)

    return warm_start.parent_of(registry_dir, "ranking", usable)
