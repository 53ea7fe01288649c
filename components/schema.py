"""The one schema module: table contracts between stages and the feature spec both trainers read.

Every stage imports its column names, Arrow schemas, reserved vocabulary indices and feature
names from here, so a contract changes in exactly one place.
"""
from __future__ import annotations

import dataclasses
import json
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

TABLES = {"events": EVENTS, "items": ITEMS, "impressions": IMPRESSIONS}


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
            raise SchemaError(
                f"{name}: column {field.name!r} has {table.column(field.name).null_count} null value(s)"
            )
    try:
        return table.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SchemaError(f"{name}: column types do not match the contract: {err}") from err


# ---------------------------------------------------------------------------------------------
# Features output: the contract between the Beam job and the trainers
# ---------------------------------------------------------------------------------------------
# Vocabularies are text files, one id per line, most frequent first, *without* reserved tokens.
# In every model index 0 is padding and index 1 is out-of-vocabulary, so line i has index i + 2.
PAD_INDEX = 0
OOV_INDEX = 1
NUM_RESERVED = 2

SPLITS = ("train", "valid", "test")

VOCAB_DIR = "vocab"
ITEM_VOCAB = "vocab/items.txt"
CATEGORY_VOCAB = "vocab/categories.txt"
USER_VOCAB = "vocab/users.txt"
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
        Path(directory, FEATURE_SPEC).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def read(cls, directory: str | Path) -> "FeatureSpec":
        path = Path(directory, FEATURE_SPEC)
        if not path.exists():
            raise SchemaError(f"{directory}: no {FEATURE_SPEC}; is this a features output directory?")
        return cls(**json.loads(path.read_text()))


def read_vocab(directory: str | Path, relative: str) -> list[str]:
    """The vocabulary ids in index order, reserved tokens excluded (index = position + NUM_RESERVED)."""
    return Path(directory, relative).read_text().splitlines()
