"""A tiny hand-made features output and model doubles for the export tests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serving.doubles import BiasRanker, MeanRetriever

from components import schema
from components.export import export as export_module
from components.serving.models import ServingModel

ITEMS = [f"i{n:02d}" for n in range(12)]  # vocabulary order: index = position + 2
CATEGORIES = ["c0", "c1", "c2"]
UNAVAILABLE = {"i03", "i07"}
# user -> (history item ids, target item id, extra seen ids); "" marks an unknown item (OOV)
TEST_EXAMPLES = {
    "u1": (["i00", "i01"], "i02", []),
    "u2": (["i04", "i05", "i06"], "i08", ["i09"]),
    "u3": (["i10"], "i11", []),
    "u4": (["i02", "i03"], "i00", ["i05"]),
    "u5": ([""], "", []),  # only unknown items: popularity fallback
}
USER_WITHOUT_HISTORY = "u6"
MAX_LEN = 3
GENERATED_AT = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.timezone.utc)
VIEW, DAY = 1 << schema.EVENT_TYPES.index("view"), 86_400
TARGET_TS = int(dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc).timestamp())  # every test target's time


def item_index(item_id: str) -> int:
    return ITEMS.index(item_id) + schema.NUM_RESERVED if item_id else schema.OOV_INDEX


def category_index(item_id: str) -> int:
    return (ITEMS.index(item_id) % len(CATEGORIES)) + schema.NUM_RESERVED if item_id else schema.OOV_INDEX


def _example(user_index: int, hist: list[str], target: str, seen: list[str], target_ts: int = TARGET_TS):
    import tensorflow as tf

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    features = {
        schema.USER: ints([user_index]),
        schema.HIST_ITEMS: ints([item_index(i) for i in hist]),
        schema.HIST_CATS: ints([category_index(i) for i in hist]),
        schema.HIST_TYPES: ints([VIEW] * len(hist)),  # one view a day
        schema.HIST_GAPS: ints([DAY] * len(hist)),
        schema.TARGET_GAP: ints([DAY]),
        schema.TARGET_ITEM: ints([item_index(target)]),
        schema.TARGET_CAT: ints([category_index(target)]),
        schema.SEEN_ITEMS: ints(sorted({item_index(i) for i in hist + seen})),
        schema.TARGET_TYPE: ints([VIEW]),
        schema.TARGET_TS: ints([target_ts]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_features(directory: Path) -> Path:
    import tensorflow as tf

    (directory / schema.VOCAB_DIR).mkdir(parents=True)
    (directory / schema.RETRIEVAL_DIR).mkdir()
    users = list(TEST_EXAMPLES) + [USER_WITHOUT_HISTORY]
    schema.write_vocab(directory, schema.ITEM_VOCAB, ITEMS)
    schema.write_vocab(directory, schema.CATEGORY_VOCAB, CATEGORIES)
    schema.write_vocab(directory, schema.USER_VOCAB, users)
    n = len(ITEMS)
    pq.write_table(
        pa.table(
            {
                "item_index": np.arange(2, n + 2, dtype=np.int64),
                "item_id": ITEMS,
                "category_index": [category_index(i) for i in ITEMS],
                "category": [CATEGORIES[category_index(i) - 2] for i in ITEMS],
                "brand": [""] * n,
                "price": [float("nan")] * n,
                "available": [i not in UNAVAILABLE for i in ITEMS],
                "train_count": np.array([5, 9, 1, 50, 7, 3, 8, 40, 2, 6, 4, 10], dtype=np.int64),
            }
        ),
        directory / schema.ITEM_FEATURES,
    )
    schema.FeatureSpec(
        max_len=MAX_LEN,
        num_items=n + 2,
        num_categories=len(CATEGORIES) + 2,
        num_users=len(users) + 2,
        ranking_task="next_item",
    ).write(directory)
    with tf.io.TFRecordWriter(str(directory / schema.RETRIEVAL_DIR / "test-00000-of-00001.tfrecord")) as writer:
        for user, (hist, target, seen) in TEST_EXAMPLES.items():
            writer.write(_example(users.index(user) + 2, hist, target, seen))
    (directory / schema.STATS).write_text(
        json.dumps({"examples": {schema.RETRIEVAL_DIR: {"test": len(TEST_EXAMPLES)}}})
    )
    return directory


def double_model(item_ids: list[str], version: str, seed: int) -> ServingModel:
    """Doubles of the real models over a vocabulary `item_ids` (index = position + 2)."""
    rng = np.random.default_rng(seed)
    num_items = len(item_ids) + schema.NUM_RESERVED
    categories = np.concatenate([[0, 1], [category_index(i) if i in ITEMS else 2 for i in item_ids]])
    return ServingModel(
        retriever=MeanRetriever(rng.normal(size=(num_items, 4))),
        ranker=BiasRanker(rng.normal(size=num_items), categories),
        item_ids=np.asarray(["", ""] + list(item_ids), dtype=object),
        version=version,
    )


@pytest.fixture
def features_dir(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("features"))


@pytest.fixture
def models(monkeypatch) -> dict[str, ServingModel]:
    """Model doubles by artifact directory name: `new` on today's vocabulary, `blessed` on an older one."""
    built = {
        "new": double_model(ITEMS, "v2", seed=0),
        "blessed": double_model(list(reversed(ITEMS[1:])) + ["gone"], "v1", seed=1),
    }
    monkeypatch.setattr(
        export_module, "load_serving_model", lambda retrieval_dir, ranking_dir, version: built[Path(retrieval_dir).name]
    )
    return built
