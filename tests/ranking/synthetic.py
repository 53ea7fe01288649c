"""A tiny features output (the layout of components/schema.py) whose users' interests drift: each step moves to the next
category or the one after, so the category of the next purchase follows from the *latest* steps only.
Order-aware DIEN can learn this; order-blind DIN pooling cannot fully."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from components import schema

NUM_CATEGORIES = 8
ITEMS_PER_CATEGORY = 4


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in np.atleast_1d(values)]))


DAY = 86_400
VIEW = 1 << schema.EVENT_TYPES.index("view")


def _behaviour(hist) -> dict:
    """One view a day: every step of type view, a day after the step before."""
    return {
        schema.HIST_TYPES: _ints([VIEW] * len(hist)),
        schema.HIST_GAPS: _ints([DAY] * len(hist)),
        schema.TARGET_GAP: _ints(DAY),
    }


def _example(user, hist, hist_cats, noclick, noclick_cats, target, target_cat, label) -> bytes:
    features = {
        schema.USER: _ints(user),
        schema.HIST_ITEMS: _ints(hist),
        schema.HIST_CATS: _ints(hist_cats),
        **_behaviour(hist),
        schema.NOCLICK_ITEMS: _ints(noclick),
        schema.NOCLICK_CATS: _ints(noclick_cats),
        schema.TARGET_ITEM: _ints(target),
        schema.TARGET_CAT: _ints(target_cat),
        schema.LABEL: tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _retrieval_example(user, hist, hist_cats, target, target_cat, seen) -> bytes:
    features = {
        schema.USER: _ints(user),
        schema.HIST_ITEMS: _ints(hist),
        schema.HIST_CATS: _ints(hist_cats),
        **_behaviour(hist),
        schema.TARGET_ITEM: _ints(target),
        schema.TARGET_CAT: _ints(target_cat),
        schema.SEEN_ITEMS: _ints(seen),
        schema.TARGET_TYPE: _ints(VIEW),
        schema.TARGET_TS: _ints(DAY * len(seen)),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_drifting_features(directory: str | Path, users: int = 200, seed: int = 0, max_len: int = 12) -> Path:
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    num_items = NUM_CATEGORIES * ITEMS_PER_CATEGORY
    item_ids = [f"item{i}" for i in range(num_items)]
    category_ids = [f"cat{c}" for c in range(NUM_CATEGORIES)]
    item_category = np.array(
        [schema.PAD_INDEX, schema.OOV_INDEX] + [i // ITEMS_PER_CATEGORY + schema.NUM_RESERVED for i in range(num_items)]
    )
    (directory / schema.VOCAB_DIR).mkdir(parents=True, exist_ok=True)
    (directory / schema.RANKING_DIR).mkdir(exist_ok=True)
    (directory / schema.RETRIEVAL_DIR).mkdir(exist_ok=True)
    schema.write_vocab(directory, schema.ITEM_VOCAB, item_ids)
    schema.write_vocab(directory, schema.CATEGORY_VOCAB, category_ids)
    schema.write_vocab(directory, schema.USER_VOCAB, [f"user{u}" for u in range(users)])
    pd.DataFrame(
        {
            "item_index": np.arange(num_items) + schema.NUM_RESERVED,
            "item_id": item_ids,
            "category_index": item_category[schema.NUM_RESERVED :],
            "category": [category_ids[c - schema.NUM_RESERVED] for c in item_category[schema.NUM_RESERVED :]],
            "brand": "",
            "price": np.nan,
            "available": True,
            "train_count": 1,
        }
    ).to_parquet(directory / schema.ITEM_FEATURES)
    schema.FeatureSpec(
        max_len=max_len,
        num_items=num_items + schema.NUM_RESERVED,
        num_categories=NUM_CATEGORIES + schema.NUM_RESERVED,
        num_users=users + schema.NUM_RESERVED,
        ranking_task="next_item",
        seed=seed,
    ).write(directory)

    writers = {
        split: tf.io.TFRecordWriter(str(directory / schema.RANKING_DIR / f"{split}-00000-of-00001.tfrecord"))
        for split in schema.SPLITS
    }
    retrieval_writers = {
        split: tf.io.TFRecordWriter(str(directory / schema.RETRIEVAL_DIR / f"{split}-00000-of-00001.tfrecord"))
        for split in ("valid", "test")
    }
    counts = {kind: dict.fromkeys(schema.SPLITS, 0) for kind in (schema.RANKING_DIR, schema.RETRIEVAL_DIR)}
    for user in range(schema.NUM_RESERVED, users + schema.NUM_RESERVED):
        length = int(rng.integers(5, max_len + 4))
        categories = (rng.integers(0, NUM_CATEGORIES) + np.cumsum(rng.integers(1, 3, length))) % NUM_CATEGORIES
        steps = categories * ITEMS_PER_CATEGORY + rng.integers(0, ITEMS_PER_CATEGORY, length) + schema.NUM_RESERVED
        noclick = (steps - schema.NUM_RESERVED + rng.integers(1, num_items, length)) % num_items + schema.NUM_RESERVED
        for t in range(1, length):
            split = "test" if t == length - 1 else "valid" if t == length - 2 else "train"
            start = max(0, t - max_len)
            negative = (steps[t] - schema.NUM_RESERVED + rng.integers(1, num_items)) % num_items + schema.NUM_RESERVED
            for target, label in ((steps[t], 1.0), (negative, 0.0)):
                writers[split].write(
                    _example(
                        user,
                        steps[start:t],
                        item_category[steps[start:t]],
                        noclick[start:t],
                        item_category[noclick[start:t]],
                        target,
                        item_category[target],
                        label,
                    )
                )
                counts[schema.RANKING_DIR][split] += 1
            if split in retrieval_writers:
                counts[schema.RETRIEVAL_DIR][split] += 1
                retrieval_writers[split].write(
                    _retrieval_example(
                        user,
                        steps[start:t],
                        item_category[steps[start:t]],
                        steps[t],
                        item_category[steps[t]],
                        np.unique(steps[:t]),
                    )
                )
    for writer in [*writers.values(), *retrieval_writers.values()]:
        writer.close()
    (directory / schema.STATS).write_text(json.dumps({"examples": counts}))
    return directory
