"""The one schema module: table contracts between stages and the feature spec both trainers read.

Every stage imports its column names, Arrow schemas, reserved vocabulary indices and feature
names from here, so a contract changes in exactly one place.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

# ---------------------------------------------------------------------------------------------
# Warehouse tables
# ---------------------------------------------------------------------------------------------
EVENT_TYPES = ("view", "cart", "fav", "purchase")

EVENTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_seq", pa.int64(), nullable=False),
        pa.field("session_id", pa.string(), nullable=True),
    ]
)

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("brand", pa.string(), nullable=True),
        pa.field("price", pa.float64(), nullable=True),
        pa.field("title", pa.string(), nullable=True),
        pa.field("available", pa.bool_(), nullable=False),
    ]
)

IMPRESSIONS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("propensity", pa.float64(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("event_ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("clicked", pa.bool_(), nullable=False),
        pa.field("purchased", pa.bool_(), nullable=False),
        pa.field("muted", pa.bool_(), nullable=True),  # dismissed (negative feedback); null: not logged
    ]
)

# Columns added to a contract after tables were written without them. A reader fills a missing one with nulls
# (unknown, not false): validate_table does, and the extract reads such a warehouse table as if it had the column.
LATER_COLUMNS = {"impressions": ("muted",)}

RECOMMENDATIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # "funnel" | "popularity_fallback"
        pa.field("variant", pa.string(), nullable=False),  # A/B arm: "control" | "treatment"
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("generated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

SIMILAR_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),
        pa.field("similar_item_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("generated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

# Items bought or carted with an item (components/export/complementary.py); source "cooccurrence" | "embedding".
COMPLEMENTARY_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),
        pa.field("complementary_item_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("generated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

# Campaign audiences (components/export/audiences.py): the top users of a promoted item or category by the
# funnel's purchase score; target_type "item" | "category".
AUDIENCES = pa.schema(
    [
        pa.field("target_id", pa.string(), nullable=False),
        pa.field("target_type", pa.string(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("generated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

TABLES = {"events": EVENTS, "items": ITEMS, "impressions": IMPRESSIONS}

# The smallest propensity an impression may carry. Below it an importance weight (up to 1e6) lets one row outweigh
# a million others, and 1e-300 gives IPS values of 1e299: extract drops such rows as `propensity_below_floor`, and
# the off-policy estimators refuse them. The synthetic shops' smallest is 2.3e-4 (medium preset).
MIN_PROPENSITY = 1e-6

# The off-policy estimators, in the order the report lists them: the keys of the off-policy evaluation output
# (experiments) that evaluation reads into its report and its gate.
OPE_ESTIMATORS = ("ips", "snips", "dm", "dr", "mrdr")


class SchemaError(ValueError):
    """Input that breaks a contract: names the table, the column and what is wrong."""


def validate_table(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """Checks columns, types and non-null fields; returns the table cast to `schema` column order.

    Stages call this on every input they read, so a bad file fails at the boundary with a message
    naming the problem instead of deep inside a model.
    """
    later = {column for columns in LATER_COLUMNS.values() for column in columns}
    missing = [f.name for f in schema if f.name not in table.column_names and f.name not in later]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}; expected {schema.names}")
    for field in schema:
        if field.name not in table.column_names:  # a column added later (LATER_COLUMNS): unknown in this table
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    table = table.select(schema.names)
    # Nulls first: Arrow's cast to a non-nullable field fails with a message that names no column.
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"{name}: column {field.name!r} has {table.column(field.name).null_count} null value(s)")
    try:
        return table.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SchemaError(f"{name}: column types do not match the contract: {err}") from err


# ---------------------------------------------------------------------------------------------
# Features output: the contract between the Beam job and the trainers
# ---------------------------------------------------------------------------------------------
# Vocabularies hold one id per line as a JSON string, most frequent first, *without* reserved tokens
# (see write_vocab). In every model index 0 is padding and index 1 is out-of-vocabulary, so line i has
# index i + 2.
PAD_INDEX = 0
OOV_INDEX = 1
NUM_RESERVED = 2

SPLITS = ("train", "valid", "test")

VOCAB_DIR = "vocab"
ITEM_VOCAB = "vocab/items.jsonl"
CATEGORY_VOCAB = "vocab/categories.jsonl"
USER_VOCAB = "vocab/users.jsonl"
ITEM_FEATURES = "item_features.parquet"
STATS = "stats.json"
FEATURE_SPEC = "feature_spec.json"
RETRIEVAL_DIR = "retrieval"  # retrieval/{split}-SSSSS-of-NNNNN.tfrecord
RANKING_DIR = "ranking"  # ranking/{split}-SSSSS-of-NNNNN.tfrecord

# Columns of item_features.parquet: one row per vocabulary item, ordered by item index.
ITEM_FEATURE_COLUMNS = (
    "item_index",  # int64, >= NUM_RESERVED
    "item_id",  # string
    "category_index",  # int64
    "category",  # string
    "brand",  # string, "" when unknown
    "price",  # float64, NaN when unknown
    "available",  # bool
    "train_count",  # int64: occurrences as a retrieval target in train; the logQ frequency
)

# tf.train.Example keys. Int64 lists hold vocabulary indices; histories are oldest first and hold
# at most max_len entries, so the last entry is the most recent item.
USER = "user"  # int64 scalar
HIST_ITEMS = "hist_items"  # int64 list
HIST_CATS = "hist_cats"  # int64 list
NOCLICK_ITEMS = "noclick_items"  # int64 list, same length as hist: DIEN's sampled negatives per step
NOCLICK_CATS = "noclick_cats"  # int64 list
TARGET_ITEM = "target_item"  # int64 scalar
TARGET_CAT = "target_cat"  # int64 scalar
LABEL = "label"  # float scalar: 1 bought/next item, 0 sampled negative or not bought
SEEN_ITEMS = "seen_items"  # int64 list: every distinct item before the target (masking), valid/test only
# Per-step behaviour, aligned step by step with hist_items (spec_version 2), in retrieval and ranking examples:
HIST_TYPES = "hist_types"  # int64 list: the step's event-type flags, bit i set when EVENT_TYPES[i] is in the step
HIST_GAPS = "hist_gaps"  # int64 list: seconds from the previous step to this one; NO_GAP for the user's first step
TARGET_GAP = "target_gap"  # int64 scalar: seconds from the last history step to the target (the request time)
# Retrieval valid/test only, what the export appends to the stored history; never a model input (the target's own
# behaviour is known only after the fact: for cvr it is the label):
TARGET_TYPE = "target_type"  # int64 scalar: the target step's event-type flags
TARGET_TS = "target_ts"  # int64 scalar: the target step's time, seconds since the epoch (UTC)
NO_GAP = -1  # a gap that does not exist (no earlier step) or is unknown
NUM_TYPE_CODES = 1 << len(EVENT_TYPES)  # hist_types values are 1..NUM_TYPE_CODES - 1; 0 = unknown or padding

RETRIEVAL_FEATURES = (
    USER,
    HIST_ITEMS,
    HIST_CATS,
    HIST_TYPES,
    HIST_GAPS,
    TARGET_ITEM,
    TARGET_CAT,
    TARGET_GAP,
    SEEN_ITEMS,
)
HELD_OUT_FEATURES = (TARGET_TYPE, TARGET_TS)  # retrieval valid/test examples only
RANKING_FEATURES = (
    USER,
    HIST_ITEMS,
    HIST_CATS,
    HIST_TYPES,
    HIST_GAPS,
    NOCLICK_ITEMS,
    NOCLICK_CATS,
    TARGET_ITEM,
    TARGET_CAT,
    TARGET_GAP,
    LABEL,
)
SEQUENCE_FEATURES = (HIST_ITEMS, HIST_CATS, HIST_TYPES, HIST_GAPS, NOCLICK_ITEMS, NOCLICK_CATS, SEEN_ITEMS)

RANKING_TASKS = ("next_item", "cvr")


# The versions of the files below. A file written before its version field existed has the version-1 layout, so
# one without the field reads as version 1 (the features outputs and model artifacts already on disk stay readable);
# any other version is a file of other code, refused with a SchemaError.
# Feature spec 2: examples carry the per-step behaviour (HIST_TYPES, HIST_GAPS, TARGET_GAP; TARGET_TYPE, TARGET_TS);
# an output of spec 1 lacks them and is refused (re-run the features stage).
FEATURE_SPEC_VERSION = 2
FEATURES_MANIFEST_VERSION = 1


def _check_version(payload: dict, key: str, known: int, where: str, hint: str = "") -> None:
    """Refuses a `key` other than `known` (absent reads as 1: the layout before the field was written); `hint` says
    what to do about it."""
    version = payload.get(key, 1)
    if version != known:
        raise SchemaError(f"{where}: {key} {version!r}, this code reads {known}{hint}")


def _read_json(path: Path, what: str) -> dict:
    """A contract file's JSON object; a missing or unreadable file is a SchemaError naming `what`."""
    if not path.is_file():
        raise SchemaError(f"{path.parent}: no {path.name}; is this {what}?")
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SchemaError(f"{path}: unreadable ({err})") from err
    if not isinstance(payload, dict):
        raise SchemaError(f"{path}: holds {type(payload).__name__}, not a JSON object")
    return payload


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What the features job built, written as feature_spec.json beside its outputs: what both trainers size
    their models by, and what evaluation and export read the split from."""

    max_len: int
    num_items: int  # vocabulary size including the reserved indices
    num_categories: int
    num_users: int
    ranking_task: str
    split: str = "leave_last_out"
    seed: int = 0
    spec_version: int = FEATURE_SPEC_VERSION

    def to_json(self) -> dict:
        """feature_spec.json's payload: the fields by name."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict, where: str = FEATURE_SPEC) -> FeatureSpec:
        """Refuses a spec_version other than FEATURE_SPEC_VERSION, missing sizes and fields it does not know."""
        _check_version(
            payload,
            "spec_version",
            FEATURE_SPEC_VERSION,
            where,
            " (version 1 was written before the examples carried event types and gaps: re-run the features stage)"
            if payload.get("spec_version", 1) == 1
            else "",
        )
        required = ("max_len", "num_items", "num_categories", "num_users", "ranking_task")
        missing = [key for key in required if key not in payload]
        if missing:
            raise SchemaError(f"{where}: lacks {missing}")
        unknown = sorted(set(payload) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise SchemaError(f"{where}: has fields this code does not know: {unknown}")
        return cls(**payload)

    def write(self, directory: str | Path) -> None:
        """feature_spec.json in a features output (the Beam job writes the same payload through its FileSystems)."""
        Path(directory, FEATURE_SPEC).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def read(cls, directory: str | Path) -> FeatureSpec:
        """The spec of a features output; a folder without one is not a features output (SchemaError)."""
        path = Path(directory, FEATURE_SPEC)
        return cls.from_json(_read_json(path, "a features output directory"), str(path))


@dataclasses.dataclass(frozen=True)
class FeaturesManifest:
    """stats.json, the features manifest the Beam job publishes last: the example count of every kind and split
    (the reader checks the shards against them), the split with the time split's window (the ranking probe, the
    campaign evaluation and evaluation's lineage repeat it), and in `details` the rest of the counts (events,
    users, items, drops, ...), which the report and the bench read as the JSON they are."""

    examples: dict  # {kind: {split: count}}, kind in (RETRIEVAL_DIR, RANKING_DIR), split in SPLITS
    split: str = "leave_last_out"
    max_examples_per_user: int = 0  # the cap on a user's train examples (0: none)
    split_window: dict | None = None  # the time split's {"cut", "window_days", ...}; None under leave-last-out
    details: dict = dataclasses.field(default_factory=dict)
    manifest_version: int = FEATURES_MANIFEST_VERSION

    def example_count(self, kind: str, split: str) -> int:
        """The records the `kind` shards of `split` hold; a count the manifest lacks is a SchemaError."""
        try:
            return int(self.examples[kind][split])
        except (ValueError, KeyError, TypeError) as err:
            raise SchemaError(f"{STATS}: no example count for {kind}/{split}: {err!r}") from err

    def to_json(self) -> dict:
        """stats.json's payload: the version, the typed fields (split_window when set), then the details."""
        return {
            "manifest_version": self.manifest_version,
            "split": self.split,
            "max_examples_per_user": self.max_examples_per_user,
            "examples": self.examples,
            **({"split_window": self.split_window} if self.split_window else {}),
            **self.details,
        }

    @classmethod
    def from_json(cls, payload: dict, where: str = STATS) -> FeaturesManifest:
        """Refuses a manifest_version other than FEATURES_MANIFEST_VERSION and a manifest without example counts."""
        _check_version(payload, "manifest_version", FEATURES_MANIFEST_VERSION, where)
        if not isinstance(payload.get("examples"), dict):
            raise SchemaError(f"{where}: lacks the example counts ('examples')")
        typed = {"manifest_version", "split", "max_examples_per_user", "examples", "split_window"}
        return cls(
            examples=payload["examples"],
            split=str(payload.get("split", "leave_last_out")),
            max_examples_per_user=int(payload.get("max_examples_per_user") or 0),
            split_window=payload.get("split_window") or None,
            details={key: value for key, value in payload.items() if key not in typed},
        )

    def write(self, directory: str | Path) -> None:
        """stats.json in a features output (the Beam job writes the same payload through its FileSystems)."""
        Path(directory, STATS).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def read(cls, directory: str | Path) -> FeaturesManifest:
        """The manifest of a features output; without one the output is not complete (SchemaError)."""
        path = Path(directory, STATS)
        if not path.is_file():
            raise SchemaError(f"{directory}: no {STATS}; a features output is complete only with it")
        return cls.from_json(_read_json(path, "a features output directory"), str(path))


def encode_vocab(ids: Iterable[str]) -> bytes:
    r"""A vocabulary file's bytes: one JSON string per line.

    Why JSON: an id may hold any character the loaders accept (U+2028, U+0085, \v, \x1c, even \n), and
    every text reader splits lines on some of them. ensure_ascii escapes all of those, so "\n" is
    the only line break in the file and each line decodes back to the id, byte for byte.
    """
    return "".join(json.dumps(i, ensure_ascii=True) + "\n" for i in ids).encode("ascii")


def decode_vocab(data: bytes, where: str) -> list[str]:
    """The ids of encode_vocab's bytes, in index order; anything else is a SchemaError naming `where`."""
    if data and not data.endswith(b"\n"):
        raise SchemaError(f"{where}: a vocabulary file ends with a line break; this one is cut short")
    ids = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            value = json.loads(line)
        except ValueError as err:
            raise SchemaError(f"{where}: line {number} is not a JSON string: {err}") from err
        if not isinstance(value, str):
            raise SchemaError(f"{where}: line {number} is {value!r}, not a JSON string")
        ids.append(value)
    return ids


def write_vocab(directory: str | Path, relative: str, ids: Iterable[str]) -> None:
    """A vocabulary file (encode_vocab's bytes) at `relative` under `directory`, folders created."""
    path = Path(directory, relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_vocab(ids))


def read_vocab(directory: str | Path, relative: str) -> list[str]:
    """The vocabulary ids in index order, reserved tokens excluded (index = position + NUM_RESERVED).

    Every reader of a vocabulary (features, retrieval, ranking, evaluation, export, experiments) comes here."""
    path = Path(directory, relative)
    if not path.is_file():
        raise SchemaError(f"{directory}: no {relative}; is this a features output directory?")
    return decode_vocab(path.read_bytes(), str(path))


def indexed_vocab(directory: str | Path, relative: str):
    """object [NUM_RESERVED + n]: index -> id, "" at the reserved indices (read_vocab's ids where the features'
    indices point: `indexed_vocab(d, USER_VOCAB)[examples[USER]]` are the examples' user ids)."""
    import numpy as np

    return np.asarray([""] * NUM_RESERVED + read_vocab(directory, relative), dtype=object)


# ---------------------------------------------------------------------------------------------
# Evaluation summary: the contract between evaluation and the stages after it (export, serving, the bench)
# ---------------------------------------------------------------------------------------------
SUMMARY_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A model in the blessed-model registry: its version and the two stage artifacts it was trained as."""

    version: str
    retrieval_dir: str
    ranking_dir: str

    @classmethod
    def from_json(cls, payload: dict, where: str) -> ModelRef:
        """From the registry's JSON form; a missing field is a SchemaError naming `where`."""
        missing = [key for key in ("version", "retrieval_dir", "ranking_dir") if key not in payload]
        if missing:
            raise SchemaError(f"{where}: lacks {'/'.join(missing)}")
        return cls(str(payload["version"]), str(payload["retrieval_dir"]), str(payload["ranking_dir"]))

    def to_json(self) -> dict:
        """The registry's JSON form (registry.BlessedModel.to_json has the same keys)."""
        return {"version": self.version, "retrieval_dir": self.retrieval_dir, "ranking_dir": self.ranking_dir}


@dataclasses.dataclass(frozen=True)
class EvaluationSummary:
    """The evaluation stage's summary JSON. Export and serving read the typed fields (the depth export_n, the
    model version, the last blessed model for the control arm, the version registered for promotion); `details`
    holds the rest (gate, metrics, intervals, ...), which the report and the bench read as the JSON it is."""

    model_version: str
    blessed: bool
    export_n: int
    previous_blessed: ModelRef | None = None
    registered: ModelRef | None = None
    details: dict = dataclasses.field(default_factory=dict)
    summary_version: int = SUMMARY_VERSION

    def to_json(self) -> dict:
        """summary.json's payload: the typed fields first, then the details, then `registered` when set."""
        return {
            "summary_version": self.summary_version,
            "model_version": self.model_version,
            "blessed": self.blessed,
            "export_n": self.export_n,
            "previous_blessed": self.previous_blessed.to_json() if self.previous_blessed else None,
            **self.details,
            **({"registered": self.registered.to_json()} if self.registered else {}),
        }

    @classmethod
    def from_json(cls, payload: dict, where: str = "evaluation summary") -> EvaluationSummary:
        """Refuses a summary_version other than SUMMARY_VERSION (a summary from other code) and missing fields."""
        version = payload.get("summary_version")
        if version != SUMMARY_VERSION:
            raise SchemaError(f"{where}: summary_version {version!r}, this code reads {SUMMARY_VERSION}")
        missing = [key for key in ("model_version", "blessed", "export_n") if key not in payload]
        if missing:
            raise SchemaError(f"{where}: lacks {missing}")
        typed = {"summary_version", "model_version", "blessed", "export_n", "previous_blessed", "registered"}
        previous, registered = payload.get("previous_blessed"), payload.get("registered")
        return cls(
            model_version=str(payload["model_version"]),
            blessed=bool(payload["blessed"]),
            export_n=int(payload["export_n"]),
            previous_blessed=ModelRef.from_json(previous, f"{where}: previous_blessed") if previous else None,
            registered=ModelRef.from_json(registered, f"{where}: registered") if registered else None,
            details={key: value for key, value in payload.items() if key not in typed},
        )

    def write(self, path: str | Path) -> None:
        """Atomically: a reader never sees half a summary."""
        from components import atomic

        atomic.write_json(path, self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> EvaluationSummary:
        """summary.json as written by the evaluation stage; unreadable or of another version: SchemaError."""
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SchemaError(f"evaluation summary {path}: unreadable ({err})") from err
        return cls.from_json(payload, f"evaluation summary {path}")


# ---------------------------------------------------------------------------------------------
# Model artifacts' metadata: what the stages after training (evaluation, export, serving, experiments) read of a
# retrieval or ranking artifact besides its SavedModels
# ---------------------------------------------------------------------------------------------
RETRIEVAL_CONFIG_FILE = "config.json"  # in a retrieval model artifact, written last (its completion marker)
RANKER_INFO_FILE = "ranker.json"  # in a ranking model artifact, written last (its completion marker)
RETRIEVAL_CONFIG_VERSION = 1
# ranker.json 2: the SavedModel's signatures also take the history's event types and gaps and the request's gap.
# Version 1 artifacts (the last blessed ranker of an older run) still load and are scored on items and categories.
RANKER_INFO_VERSION = 2
BEHAVIOUR_RANKER_INFO_VERSION = 2


@dataclasses.dataclass(frozen=True)
class RetrievalModelConfig:
    """config.json of a retrieval model artifact: the settings it was trained with (components.retrieval.config's
    RetrievalConfig as a dict: retrieval reads it back into that class, the warm start compares a parent's with
    this run's, evaluation reports them), beside the file's version."""

    config: dict
    config_version: int = RETRIEVAL_CONFIG_VERSION

    def to_json(self) -> dict:
        """config.json's payload: the version, then the settings by name (the layout stays flat)."""
        return {"config_version": self.config_version, **self.config}

    @classmethod
    def from_json(cls, payload: dict, where: str = RETRIEVAL_CONFIG_FILE) -> RetrievalModelConfig:
        """Refuses a config_version other than RETRIEVAL_CONFIG_VERSION (an artifact of other code)."""
        _check_version(payload, "config_version", RETRIEVAL_CONFIG_VERSION, where)
        return cls({key: value for key, value in payload.items() if key != "config_version"})

    def write(self, directory: str | Path) -> None:
        """Atomically: config.json marks a retrieval artifact complete, so a reader never sees half of it."""
        from components import atomic

        atomic.write_json(Path(directory, RETRIEVAL_CONFIG_FILE), self.to_json())

    @classmethod
    def read(cls, directory: str | Path) -> RetrievalModelConfig:
        """config.json of the retrieval artifact in `directory`; missing, unreadable or of another version: SchemaError."""
        path = Path(directory, RETRIEVAL_CONFIG_FILE)
        return cls.from_json(_read_json(path, "a retrieval model artifact"), str(path))


@dataclasses.dataclass(frozen=True)
class RankerInfo:
    """ranker.json of a ranking model artifact: the model's configuration (model_type, sizes), the training
    settings, the metrics of the run that produced it (with the per-epoch curves the report draws) and, once the
    ranker was fitted against a retrieval model, the funnel's `fusion` settings (retrieval_weight: the funnel adds
    that times the retrieval score to the ranker's logit). `details` holds the rest (ranking_task, ...)."""

    model_config: dict
    train_config: dict = dataclasses.field(default_factory=dict)
    test_metrics: dict = dataclasses.field(default_factory=dict)
    fusion: dict | None = None
    details: dict = dataclasses.field(default_factory=dict)
    info_version: int = RANKER_INFO_VERSION

    @property
    def model_type(self) -> str:
        """The model the artifact holds (dien, din, ...); "" when the artifact did not record it."""
        return str(self.model_config.get("model_type") or "")

    @property
    def retrieval_weight(self) -> float:
        """The funnel's weight of the retrieval score beside the ranker's logit; 0 without fusion (ranker alone)."""
        return float((self.fusion or {}).get("retrieval_weight") or 0.0)

    def to_json(self) -> dict:
        """ranker.json's payload: the version, model_config first, then the details, the rest and `fusion` when set."""
        return {
            "info_version": self.info_version,
            "model_config": self.model_config,
            **self.details,
            "train_config": self.train_config,
            "test_metrics": self.test_metrics,
            **({"fusion": self.fusion} if self.fusion is not None else {}),
        }

    @classmethod
    def from_json(cls, payload: dict, where: str = RANKER_INFO_FILE) -> RankerInfo:
        """Refuses an info_version other than 1 or RANKER_INFO_VERSION and an info without the model configuration."""
        version = payload.get("info_version", 1)
        if version not in (1, RANKER_INFO_VERSION):
            raise SchemaError(f"{where}: info_version {version!r}, this code reads 1 and {RANKER_INFO_VERSION}")
        if not isinstance(payload.get("model_config"), dict):
            raise SchemaError(f"{where}: lacks the model configuration ('model_config')")
        typed = {"info_version", "model_config", "train_config", "test_metrics", "fusion"}
        return cls(
            model_config=payload["model_config"],
            train_config=payload.get("train_config") or {},
            test_metrics=payload.get("test_metrics") or {},
            fusion=payload.get("fusion"),
            details={key: value for key, value in payload.items() if key not in typed},
            info_version=version,
        )

    def write(self, directory: str | Path) -> None:
        """Atomically: ranker.json marks a ranking artifact complete, so a reader never sees half of it."""
        from components import atomic

        atomic.write_json(Path(directory, RANKER_INFO_FILE), self.to_json())

    @classmethod
    def read(cls, directory: str | Path) -> RankerInfo:
        """ranker.json of the ranking artifact in `directory`; missing, unreadable or of another version: SchemaError."""
        path = Path(directory, RANKER_INFO_FILE)
        return cls.from_json(_read_json(path, "a ranking model artifact"), str(path))
