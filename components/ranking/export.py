"""The ranking model artifact: a SavedModel on raw string ids, and the Python `Ranker` that loads it.

Layout of the artifact directory (docs/architecture.md, contracts):
  saved_model/   signatures
                   serving_default(hist_items, hist_cats: string [B, L], candidate_items: string [B, N],
                                   hist_types, hist_gaps: int64 [B, L], request_gap: int64 [B]) -> {"scores": [B, N]}
                   score_indices(hist_items, hist_cats, candidate_items, candidate_cats, hist_types, hist_gaps: int64
                                 [B, *], request_gap: int64 [B]) -> {"scores": [B, N]}
                 "" is padding; unknown ids map to OOV. Candidate categories come from the item -> category
                 table inside the model (OOV for unknown items). hist_types are each step's event-type flags (0:
                 unknown), hist_gaps its seconds since the step before, request_gap the seconds from the last step
                 to the request (schema.NO_GAP: none or unknown). An artifact of ranker.json info_version 1 was
                 written before these three inputs: its signatures take the first three (four) only, and `Ranker`
                 calls them so.
  weights.npz    the id tables with their ids and the other learned weights (ranking/warm_start.py)
  ranker.json    model configuration and the metrics of the run that produced it; with "fusion" (when the ranker
                 was trained against a retrieval model) the funnel's final score is
                 logit(scores) + fusion.retrieval_weight * retrieval score (components.serving.funnel.fuse);
                 the SavedModel itself returns the ranker's probability only
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from components import atomic, schema
from components.ranking import warm_start
from components.ranking.base import BEHAVIOUR_INPUTS, SequenceRanker

SAVED_MODEL = "saved_model"
INFO = schema.RANKER_INFO_FILE  # schema.RankerInfo
MAX_ROWS_PER_CALL = 16384  # users x candidates per call of the model in Ranker.score: bounds memory
_INDICES, _BEHAVIOUR = tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None], tf.int64)


def item_category_table(features_dir: str | Path, num_items: int) -> np.ndarray:
    """Category index of every item index (PAD -> PAD, OOV -> OOV), from item_features.parquet."""
    frame = pd.read_parquet(Path(features_dir, schema.ITEM_FEATURES), columns=["item_index", "category_index"])
    table = np.full(num_items, schema.OOV_INDEX, np.int64)
    table[schema.PAD_INDEX] = schema.PAD_INDEX
    index = frame["item_index"].to_numpy()
    if len(index) and (index.min() < schema.NUM_RESERVED or index.max() >= num_items):
        raise schema.SchemaError(f"{features_dir}: item_features.parquet has item indices outside 2..{num_items - 1}")
    table[index] = frame["category_index"].to_numpy()
    return table


def _string_lookup(vocab: list[str]) -> tf.lookup.StaticHashTable:
    keys = tf.constant(vocab, tf.string)
    values = tf.range(schema.NUM_RESERVED, len(vocab) + schema.NUM_RESERVED, dtype=tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=schema.OOV_INDEX)


def _at_least_one_step(sequences: tf.Tensor) -> tf.Tensor:
    """An empty history becomes one padding step, so a user without history still gets scores."""
    missing = tf.maximum(1 - tf.shape(sequences)[1], 0)
    return tf.pad(sequences, [[0, 0], [0, missing]])


def _in_vocab(indices: tf.Tensor, size: int) -> tf.Tensor:
    """Indices outside the vocabulary become OOV instead of failing the embedding lookup."""
    outside = (indices < 0) | (indices >= size)
    return tf.where(outside, tf.constant(schema.OOV_INDEX, tf.int64), indices)


class _Untracked:
    """Holds the Keras model out of the SavedModel's object graph: only its variables are saved (below),
    which spares Keras' tracing of every layer's call for a Keras-format save nobody loads."""

    def __init__(self, model: SequenceRanker):
        self.model = model


class RankerModule(tf.Module):
    """What the SavedModel holds: the model's variables and functions, the vocabularies, item -> category."""

    def __init__(
        self, model: SequenceRanker, item_vocab: list[str], category_vocab: list[str], item_category: np.ndarray
    ):
        super().__init__()
        self._holder = _Untracked(model)
        self.model_variables = list(model.variables)
        self.item_lookup = _string_lookup(item_vocab)
        self.category_lookup = _string_lookup(category_vocab)
        self.item_category = tf.Variable(item_category, trainable=False, name="item_category")

    def _indices(self, ids: tf.Tensor, table: tf.lookup.StaticHashTable) -> tf.Tensor:
        return tf.where(tf.equal(ids, ""), tf.constant(schema.PAD_INDEX, tf.int64), table.lookup(ids))

    def _score(self, hist_items, hist_cats, candidate_items, candidate_cats, hist_types, hist_gaps, request_gap):
        model = self._holder.model
        num_items, num_categories = model.embedding.num_items, model.embedding.num_categories
        hist_items = _at_least_one_step(_in_vocab(hist_items, num_items))
        # an empty history's one padding step gets type 0 (unknown) and a gap that no model reads (masked)
        behaviour = dict(zip(BEHAVIOUR_INPUTS, (_at_least_one_step(hist_types), _at_least_one_step(hist_gaps))))
        behaviour[BEHAVIOUR_INPUTS[2]] = request_gap
        scores = model.score_indices(
            hist_items,
            _at_least_one_step(_in_vocab(hist_cats, num_categories)),
            _in_vocab(candidate_items, num_items),
            _in_vocab(candidate_cats, num_categories),
            behaviour,
        )
        return {"scores": scores}

    @tf.function(input_signature=[_INDICES] * 6 + [_BEHAVIOUR], autograph=False)
    def score_indices(self, hist_items, hist_cats, candidate_items, candidate_cats, hist_types, hist_gaps, request_gap):
        """P(buy) {"scores": [B, N]} for vocabulary indices: histories [B, L] with their event types and gaps,
        candidates with their categories [B, N], and the request's gap since the last step [B]."""
        return self._score(hist_items, hist_cats, candidate_items, candidate_cats, hist_types, hist_gaps, request_gap)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.string)] * 3 + [_INDICES] * 2 + [_BEHAVIOUR], autograph=False
    )
    def serve(self, hist_items, hist_cats, candidate_items, hist_types, hist_gaps, request_gap):
        """The serving signature: P(buy) {"scores": [B, N]} for raw string ids, histories [B, L] with their event
        types and gaps [B, L], candidates [B, N] and the request's gap since the last step [B]."""
        candidates = self._indices(candidate_items, self.item_lookup)
        return self._score(
            self._indices(hist_items, self.item_lookup),
            self._indices(hist_cats, self.category_lookup),
            candidates,
            tf.gather(self.item_category, candidates),
            hist_types,
            hist_gaps,
            request_gap,
        )


def ranker_module(model: SequenceRanker, features_dir: str | Path) -> RankerModule:
    """The serving module around a trained model: raw ids in, through the features output's vocabularies."""
    spec = schema.FeatureSpec.read(features_dir)
    return RankerModule(
        model,
        schema.read_vocab(features_dir, schema.ITEM_VOCAB),
        schema.read_vocab(features_dir, schema.CATEGORY_VOCAB),
        item_category_table(features_dir, spec.num_items),
    )


def export_ranker(
    model: SequenceRanker, features_dir: str | Path, output_dir: str | Path, info: dict, train_keys=None
) -> None:
    """Writes the artifact (saved_model/ and ranker.json) through atomic.staged_directory, so a failed
    export never leaves a half-written model that looks whole; `train_keys` go into WEIGHTS (warm_start.save)."""
    module = ranker_module(model, features_dir)
    recorded = schema.RankerInfo.from_json(
        {"info_version": schema.RANKER_INFO_VERSION, "model_config": dataclasses.asdict(model.config), **info}
    )
    with atomic.staged_directory(output_dir, last=INFO) as staging:
        tf.saved_model.save(
            module,
            str(staging / SAVED_MODEL),
            signatures={"serving_default": module.serve, "score_indices": module.score_indices},
        )
        warm_start.save(model, features_dir, staging, train_keys)  # WEIGHTS: what a warm start tomorrow carries over
        recorded.write(staging)


def write_fusion(output_dir: str | Path, fusion: dict) -> None:
    """Adds the funnel's fusion settings to ranker.json (replaced atomically)."""
    dataclasses.replace(schema.RankerInfo.read(output_dir), fusion=fusion).write(output_dir)


class Ranker:
    """Scores candidates for users: the history is encoded once per user, then each candidate is scored.

    retrieval_weight: the funnel adds this times the retrieval score to the ranker's logit (0: ranker alone).
    reads_behaviour: False for an artifact written before the behaviour inputs (ranker.json info_version 1), whose
    signature takes items and categories only; it is scored without them.
    """

    def __init__(self, module, retrieval_weight: float = 0.0, reads_behaviour: bool = True):
        self._module = module
        self._score = module.score_indices
        self.item_category: np.ndarray = module.item_category.numpy()
        self.retrieval_weight = float(retrieval_weight)
        self.reads_behaviour = reads_behaviour

    def score(self, hist_items_idx, hist_cats_idx, cand_items_idx, cand_cats_idx, behaviour=None) -> np.ndarray:
        """P(buy) [B, N] for histories [B, L] (0 = padding, on either side) and candidates [B, N]; `behaviour`
        (serving.funnel.Behaviour, aligned with the histories) or None: every step's type and gap unknown."""
        arrays = [np.asarray(a, dtype=np.int64) for a in (hist_items_idx, hist_cats_idx, cand_items_idx, cand_cats_idx)]
        hist_items, hist_cats, cand_items, cand_cats = arrays
        if (
            hist_items.shape != hist_cats.shape
            or cand_items.shape != cand_cats.shape
            or hist_items.ndim != 2
            or cand_items.ndim != 2
            or len(hist_items) != len(cand_items)
        ):
            raise ValueError(
                f"expected histories [B, L] and candidates [B, N] for the same B; got "
                f"{hist_items.shape}, {hist_cats.shape}, {cand_items.shape}, {cand_cats.shape}"
            )
        inputs = [hist_items, hist_cats, cand_items, cand_cats]
        if self.reads_behaviour:
            from components.serving.funnel import Behaviour

            behaviour = behaviour if behaviour is not None else Behaviour.unknown(hist_items)
            if behaviour.types.shape != hist_items.shape or behaviour.request_gap.shape != (len(hist_items),):
                raise ValueError(
                    f"behaviour of shapes {behaviour.types.shape}, {behaviour.request_gap.shape} for histories "
                    f"{hist_items.shape}"
                )
            inputs += [behaviour.types, behaviour.gaps, behaviour.request_gap]
        users_per_call = max(1, MAX_ROWS_PER_CALL // max(cand_items.shape[1], 1))
        out = np.empty(cand_items.shape, np.float32)
        for start in range(0, len(hist_items), users_per_call):
            rows = slice(start, start + users_per_call)
            out[rows] = self._score(*(tf.constant(np.asarray(a[rows], np.int64)) for a in inputs))["scores"].numpy()
        return out


def load_ranker(model_dir: str | Path) -> Ranker:
    """The ranking artifact in `model_dir` as a Ranker, with the funnel's fusion weight ranker.json recorded (0
    without)."""
    path = Path(model_dir, SAVED_MODEL)
    if not path.is_dir():
        raise FileNotFoundError(f"{model_dir}: no {SAVED_MODEL}/; is this a ranking model artifact?")
    info = schema.RankerInfo.read(model_dir) if Path(model_dir, INFO).is_file() else None
    weight = info.retrieval_weight if info is not None else 0.0
    reads_behaviour = info is not None and info.info_version >= schema.BEHAVIOUR_RANKER_INFO_VERSION
    return Ranker(tf.saved_model.load(str(path)), weight, reads_behaviour)
