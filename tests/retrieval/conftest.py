"""Small generated features outputs (the layout of components/schema.py) for the retrieval tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components import schema


def _int_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def sequential_shop(
    num_users: int, num_categories: int, items_per_category: int, length: int, seed: int, drift: float = 0.5
):
    """Users move through the categories in a fixed order, one category on with probability `drift`
    at each step, and pick any item of their current category.

    The next item then follows from the history's categories, which a sequence model learns from
    shared structure, while a transition count needs to have seen each item pair: with many items
    per category most pairs are rare, so item-to-item covers only a few of the right items.
    """
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(num_users):
        category = rng.integers(num_categories)
        steps = []
        for _ in range(rng.integers(length // 2, length + 1)):
            steps.append(category * items_per_category + rng.integers(items_per_category))
            category = (category + (rng.random() < drift)) % num_categories
        sequences.append(steps)
    return sequences


def write_features(
    directory: Path,
    sequences: list[list[int]],
    item_category: dict[int, int],
    max_len: int,
    gaps: list[list[int]] | None = None,
) -> Path:
    """Writes the features layout the way the Beam job does: vocabularies, item features, retrieval TFRecords.
    `gaps`: each step's seconds since the step before, per sequence (default: a day each)."""
    counts: dict[int, int] = {}
    for sequence in sequences:
        for item in sequence:
            counts[item] = counts.get(item, 0) + 1
    items = sorted(counts, key=lambda i: (-counts[i], f"i{i}"))
    categories = sorted({item_category[i] for i in items}, key=lambda c: f"c{c}")
    item_index = {item: n + schema.NUM_RESERVED for n, item in enumerate(items)}
    cat_index = {c: n + schema.NUM_RESERVED for n, c in enumerate(categories)}
    (directory / schema.VOCAB_DIR).mkdir(parents=True)
    (directory / schema.RETRIEVAL_DIR).mkdir()
    schema.write_vocab(directory, schema.ITEM_VOCAB, [f"i{i}" for i in items])
    schema.write_vocab(directory, schema.CATEGORY_VOCAB, [f"c{c}" for c in categories])
    schema.write_vocab(directory, schema.USER_VOCAB, [f"u{u}" for u in range(len(sequences))])
    train_count = dict.fromkeys(items, 0)
    counts = dict.fromkeys(schema.SPLITS, 0)
    writers = {
        s: tf.io.TFRecordWriter(str(directory / schema.RETRIEVAL_DIR / f"{s}-00000-of-00001.tfrecord"))
        for s in schema.SPLITS
    }
    for user, sequence in enumerate(sequences):
        for t in range(1, len(sequence)):
            split = "test" if t == len(sequence) - 1 else "valid" if t == len(sequence) - 2 else "train"
            history = sequence[max(0, t - max_len) : t]
            step_gaps = [86_400] * len(sequence) if gaps is None else gaps[user]
            feature = {
                schema.USER: _int_feature([user + schema.NUM_RESERVED]),
                schema.HIST_ITEMS: _int_feature(item_index[i] for i in history),
                schema.HIST_CATS: _int_feature(cat_index[item_category[i]] for i in history),
                schema.HIST_TYPES: _int_feature([1] * len(history)),  # one view a day
                schema.HIST_GAPS: _int_feature(step_gaps[max(0, t - max_len) : t]),
                schema.TARGET_GAP: _int_feature([step_gaps[t]]),
                schema.TARGET_ITEM: _int_feature([item_index[sequence[t]]]),
                schema.TARGET_CAT: _int_feature([cat_index[item_category[sequence[t]]]]),
            }
            if split == "train":
                train_count[sequence[t]] += 1
            else:
                feature[schema.SEEN_ITEMS] = _int_feature(sorted({item_index[i] for i in sequence[:t]}))
                feature[schema.TARGET_TYPE], feature[schema.TARGET_TS] = _int_feature([1]), _int_feature([86_400 * t])
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[split].write(example.SerializeToString())
            counts[split] += 1
    for writer in writers.values():
        writer.close()
    (directory / schema.STATS).write_text(json.dumps({"examples": {schema.RETRIEVAL_DIR: counts}}))
    pd.DataFrame(
        {
            "item_index": [item_index[i] for i in items],
            "item_id": [f"i{i}" for i in items],
            "category_index": [cat_index[item_category[i]] for i in items],
            "category": [f"c{item_category[i]}" for i in items],
            "brand": [f"b{i % 7}" if i % 3 else "" for i in items],
            "price": [float(1 + i % 50) if i % 4 else np.nan for i in items],
            "available": [i % 17 != 0 for i in items],
            "train_count": [train_count[i] for i in items],
        }
    ).to_parquet(directory / schema.ITEM_FEATURES, index=False)
    schema.FeatureSpec(
        max_len=max_len,
        num_items=len(items) + schema.NUM_RESERVED,
        num_categories=len(categories) + schema.NUM_RESERVED,
        num_users=len(sequences),
        ranking_task="next_item",
    ).write(directory)
    return directory


@pytest.fixture(scope="session")
def shop_features(tmp_path_factory) -> Path:
    """1,000 users over 2,000 items in 20 categories, 6 to 12 steps each."""
    num_categories, items_per_category = 20, 100
    sequences = sequential_shop(1000, num_categories, items_per_category, length=12, seed=7)
    item_category = {i: i // items_per_category for i in range(num_categories * items_per_category)}
    return write_features(tmp_path_factory.mktemp("features"), sequences, item_category, max_len=10)


@pytest.fixture(scope="session")
def trained_small(shop_features):
    """One small model trained on the generated shop, shared by the export and quality tests
    (building the training graph dominates their run time)."""
    from components.retrieval import training
    from components.retrieval.config import RetrievalConfig
    from components.retrieval.data import load_catalogue, load_examples

    config = RetrievalConfig(embedding_dim=32, max_len=10, batch_size=128, epochs=5, patience=2, seed=0)
    return training.train(
        load_examples(shop_features, "train", 10),
        load_examples(shop_features, "valid", 10),
        load_catalogue(shop_features),
        config,
    )
