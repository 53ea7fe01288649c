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
    ]
)

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
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}; expected {schema.names}")
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

RETRIEVAL_FEATURES = (USER, HIST_ITEMS, HIST_CATS, TARGET_ITEM, TARGET_CAT, SEEN_ITEMS)
RANKING_FEATURES = (USER, HIST_ITEMS, HIST_CATS, NOCLICK_ITEMS, NOCLICK_CATS, TARGET_ITEM, TARGET_CAT, LABEL)
SEQUENCE_FEATURES = (HIST_ITEMS, HIST_CATS, NOCLICK_ITEMS, NOCLICK_CATS, SEEN_ITEMS)

RANKING_TASKS = ("next_item", "cvr")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What the features job built, written as feature_spec.json beside its outputs."""

    max_len: int
    num_items: int  # vocabulary size including the reserved indices
    num_categories: int
    num_users: int
    ranking_task: str
    split: str = "leave_last_out"
    seed: int = 0

    def write(self, directory: str | Path) -> None:
        """feature_spec.json in a features output: what both trainers size their models by."""
        Path(directory, FEATURE_SPEC).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def read(cls, directory: str | Path) -> FeatureSpec:
        """The spec of a features output; a folder without one is not a features output (SchemaError)."""
        path = Path(directory, FEATURE_SPEC)
        if not path.exists():
            raise SchemaError(f"{directory}: no {FEATURE_SPEC}; is this a features output directory?")
        return cls(**json.loads(path.read_text()))


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
