"""Warm start of DIEN / DIN from the last blessed ranker, items and categories by id (components.warm_start).

The ranking artifact writes WEIGHTS beside its SavedModel: the item and category embedding tables with the ids of
their rows, and every other weight that training learns, in model order. A warm start builds today's model on
today's vocabulary, copies the row of every item (category) id the parent knew wherever today's vocabulary puts
it, starts a new id's row at zero (the head then sees a new item by its category row and its context features),
and copies the other weights unchanged, which needs the same architecture (ModelConfig). The context features'
statistics (context.CandidateContext) are today's counts, never the parent's.

A warm start trains on fewer rows, too, as retrieval's does (RetrievalConfig.warm_replay): every train row the parent
did not train on (the days after its cut: `row_keys` of its train rows are recorded in WEIGHTS as TRAIN_KEYS) plus a
WARM_REPLAY share of the ones it did, drawn once from the run's seed (`warm_rows`, `select_rows`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

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

__all__ = [
    "TRAIN_KEYS",
    "WARM_REPLAY",
    "WARM_START",
    "WEIGHTS",
    "Parent",
    "WarmStartError",
    "copy_learned",
    "initialise",
    "parent_of",
    "row_keys",
    "save",
    "select_rows",
    "trained_keys",
    "warm_rows",
    "warm_training_set",
]
INFO = "ranker.json"  # export.INFO (export imports this module)
# every ModelConfig field shapes the weights or what they mean
ARCHITECTURE = tuple(field.name for field in dataclasses.fields(ModelConfig))
TRAIN_KEYS = "train_keys"  # in WEIGHTS: row_keys of the train rows the ranker was trained with (and its parent's)
# the share of the parent's rows a warm start replays beside the new ones (retrieval's warm_replay). Lifecycle bench,
# tuning seed 10, --scale 8, day 2, 2 warm epochs, VALID AUC (never test): replay 0.2 0.5986 (7.6 CPU s), 0.5 0.5931
# (10.7 CPU s), cold (3 epochs, every row) 0.5932 (17.0 CPU s)
WARM_REPLAY = 0.2


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


def save(model: SequenceRanker, features_dir: str | Path, directory: str | Path, train_keys=None) -> None:
    """WEIGHTS: the id tables with their ids, then the other learned weights in model order, and TRAIN_KEYS
    (`train_keys`: row_keys of every train row of the run, for tomorrow's warm start) when given."""
    arrays = {f"table_{name}": var.numpy() for name, var in _tables(model).items()}
    for name, ids in vocabularies(features_dir).items():
        arrays[f"ids_{name}"] = np.asarray(ids, dtype=str)
    arrays.update(others_arrays(_others(model)))
    if train_keys is not None:
        arrays[TRAIN_KEYS] = np.asarray(train_keys, np.uint64)
    save_arrays(directory, arrays)


def row_keys(features_dir: str | Path, data) -> np.ndarray:
    """uint64 [rows]: a key of each ranking row (RankingData) that another run's features give the same row whatever
    the two runs' vocabularies: its user's id, its target item's id, the seconds from the last history step to the
    target and its label (retrieval.training.example_keys with the label)."""
    users = np.asarray(schema.read_vocab(features_dir, schema.USER_VOCAB), dtype=object)
    items = np.asarray(vocabularies(features_dir)["item"], dtype=object)
    frame = pd.DataFrame(
        {
            "user": users[np.asarray(data.scalars[schema.USER]) - schema.NUM_RESERVED],
            "item": items[np.asarray(data.scalars[schema.TARGET_ITEM])],
            "gap": np.asarray(data.scalars[schema.TARGET_GAP], np.int64),
            "label": np.asarray(data.scalars[schema.LABEL], np.float32),
        }
    )
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)


def split_keys(features_dir: str | Path, data) -> np.ndarray:
    """row_keys of a split's rows in memory (RankingData), or of a streamed one's (data.StreamedRanking) bucket by
    bucket, in bucket order."""
    from components.ranking.data import StreamedRanking

    if not isinstance(data, StreamedRanking):
        return row_keys(features_dir, data)
    return np.concatenate([row_keys(features_dir, data.bucket(i)) for i in range(len(data.paths))])


def warm_rows(keys: np.ndarray, seen: np.ndarray | None, replay: float, seed: int) -> np.ndarray | None:
    """Sorted row indices a warm start trains on: every row whose key the parent did not train on (`seen`) plus
    round(replay * seen rows) of the others, drawn without replacement by a generator of `seed`; None (every row)
    when the parent recorded no keys or replay >= 1."""
    if not 0 < replay <= 1:
        raise ValueError(f"warm replay must be in (0, 1], got {replay}")
    if seen is None or replay >= 1:
        return None
    known = np.isin(keys, seen)
    new, old = np.flatnonzero(~known), np.flatnonzero(known)
    drawn = np.random.default_rng([seed, 23]).choice(old, size=int(round(replay * len(old))), replace=False)
    return np.sort(np.concatenate([new, drawn]))


def select_rows(train_set, rows: np.ndarray):
    """The TrainingSet (ranking.training) of `rows` only, each with its negative list; the item statistics stay the
    whole split's (the context features read today's counts)."""
    from components.ranking.data import take_rows

    return dataclasses.replace(train_set, data=take_rows(train_set.data, rows))


def warm_training_set(train_set, features_dir: str | Path, parent: Parent | None, replay: float, seed: int):
    """(the rows a run trains on, row_keys of every train row, what the selection kept): for a warm start from a
    parent that recorded its keys, the new rows plus a `replay` share of the seen ones (warm_rows); otherwise
    `train_set` whole and an empty dict. A streamed split (data.StreamedRanking) is keyed bucket by bucket and trained
    on whole: the selection of rows is not applied to it yet."""
    from components.ranking.data import StreamedRanking

    data, keys = train_set.data, split_keys(features_dir, train_set.data)
    if isinstance(data, StreamedRanking):
        return train_set, keys, {}
    rows = None if parent is None else warm_rows(keys, parent.train_keys, replay, seed)
    if rows is None:
        return train_set, keys, {}
    return (
        select_rows(train_set, rows),
        keys,
        {"train_rows": int(len(rows)), "of_rows": int(len(keys)), "replay": replay},
    )


@dataclasses.dataclass(frozen=True)
class Parent:
    version: str
    arrays: dict[str, np.ndarray]
    config: dict  # the parent's ModelConfig

    @property
    def train_keys(self) -> np.ndarray | None:
        """row_keys of the parent's train rows (None: a parent that did not record them)."""
        return self.arrays.get(TRAIN_KEYS)

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


def copy_learned(source: SequenceRanker, target: SequenceRanker) -> None:
    """Copies `source`'s learned weights into `target`, a built model of the same architecture and vocabulary (the
    refit through valid's start): the id tables and the other weights, not the context's statistics (target's own
    counts)."""
    for name, table in _tables(target).items():
        table.assign(_tables(source)[name])
    for into, value in zip(_others(target), _others(source), strict=True):
        into.assign(value)


def trained_keys(features_dir: str | Path, train_keys: np.ndarray, train_set) -> np.ndarray:
    """row_keys of every row a run trained on (WEIGHTS' TRAIN_KEYS, tomorrow's `seen`): the train split's
    `train_keys`, and after a refit through valid the valid steps' (tomorrow's train rows)."""
    if train_set.refit is None:
        return train_keys
    return np.concatenate([train_keys, split_keys(features_dir, train_set.refit.data)])


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
