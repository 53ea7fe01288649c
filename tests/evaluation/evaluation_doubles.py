"""A tiny features output with sequential signal, and model doubles that satisfy the serving APIs.

Users walk the catalogue with a personal step (1 or 2): the next item is the last item plus the
step, with some random jumps. The "step" double reads the step from the last two items, so it
beats the baselines (item-to-item only sees that both +1 and +2 follow an item); the "random"
double is a model that learned nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components import schema
from components.serving.models import ServingModel

NUM_CATALOGUE = 60
VIEW, DAY = 1 << schema.EVENT_TYPES.index("view"), 86_400
MAX_LEN = 8


def item_id(number: int) -> str:
    return f"i{number:03d}"


def make_sequences(users: int = 120, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(users):
        step = int(rng.integers(1, 3))
        current = int(rng.integers(0, NUM_CATALOGUE))
        sequence = [current]
        for _ in range(int(rng.integers(4, 12))):
            current = int(rng.integers(0, NUM_CATALOGUE)) if rng.random() < 0.1 else (current + step) % NUM_CATALOGUE
            if current != sequence[-1]:
                sequence.append(current)
        sequences.append(sequence)
    return sequences


def _example(features: dict) -> bytes:
    import tensorflow as tf

    feature = {}
    for name, value in features.items():
        values = np.atleast_1d(value)
        if name == schema.LABEL:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values.astype(float).tolist()))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values.astype(np.int64).tolist()))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_features(directory: Path, sequences: list[list[int]], seed: int = 0) -> Path:
    """Writes the features-output layout of components/schema.py for these sequences (item numbers)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    counts: dict[int, int] = {}
    for sequence in sequences:
        for number in sequence:
            counts[number] = counts.get(number, 0) + 1
    vocab = sorted(counts, key=lambda n: (-counts[n], item_id(n)))
    index = {n: i + schema.NUM_RESERVED for i, n in enumerate(vocab)}
    categories = sorted({n // 10 for n in vocab})
    cat_index = {c: i + schema.NUM_RESERVED for i, c in enumerate(categories)}
    users = [f"u{u:04d}" for u in range(len(sequences))]
    (directory / "vocab").mkdir(parents=True)
    schema.write_vocab(directory, schema.ITEM_VOCAB, [item_id(n) for n in vocab])
    schema.write_vocab(directory, schema.CATEGORY_VOCAB, [f"c{c}" for c in categories])
    schema.write_vocab(directory, schema.USER_VOCAB, users)
    num_items = len(vocab) + schema.NUM_RESERVED
    examples = {(kind, split): [] for kind in ("retrieval", "ranking") for split in schema.SPLITS}
    train_count = np.zeros(num_items, np.int64)
    for user, sequence in enumerate(sequences):
        idx = [index[n] for n in sequence]
        cats = [cat_index[n // 10] for n in sequence]
        for t in range(1, len(idx)):
            split = "test" if t == len(idx) - 1 else "valid" if t == len(idx) - 2 else "train"
            hist, hist_cats = idx[max(0, t - MAX_LEN) : t], cats[max(0, t - MAX_LEN) : t]
            base = {
                schema.USER: user + schema.NUM_RESERVED,
                schema.HIST_ITEMS: hist,
                schema.HIST_CATS: hist_cats,
                schema.HIST_TYPES: [VIEW] * len(hist),  # one view a day
                schema.HIST_GAPS: [DAY] * len(hist),
                schema.TARGET_GAP: DAY,
            }
            retrieval = {**base, schema.TARGET_ITEM: idx[t], schema.TARGET_CAT: cats[t]}
            if split == "train":
                train_count[idx[t]] += 1
            else:
                retrieval[schema.SEEN_ITEMS] = sorted(set(idx[:t]))
                retrieval[schema.TARGET_TYPE], retrieval[schema.TARGET_TS] = VIEW, DAY * t
            examples[("retrieval", split)].append(retrieval)
            negative = int(rng.choice([i for i in range(schema.NUM_RESERVED, num_items) if i != idx[t]]))
            noclick = {schema.NOCLICK_ITEMS: hist, schema.NOCLICK_CATS: hist_cats}
            examples[("ranking", split)].append(
                {**base, **noclick, schema.TARGET_ITEM: idx[t], schema.TARGET_CAT: cats[t], schema.LABEL: 1.0}
            )
            examples[("ranking", split)].append(
                {
                    **base,
                    **noclick,
                    schema.TARGET_ITEM: negative,
                    schema.TARGET_CAT: cat_index[vocab[negative - 2] // 10],
                    schema.LABEL: 0.0,
                }
            )
    for (kind, split), rows in examples.items():
        (directory / kind).mkdir(exist_ok=True)
        with tf.io.TFRecordWriter(str(directory / kind / f"{split}-00000-of-00001.tfrecord")) as writer:
            for row in rows:
                writer.write(_example(row))
    counts = {kind: {split: len(rows) for (k, split), rows in examples.items() if k == kind} for kind, _ in examples}
    pq.write_table(
        pa.table(
            {
                "item_index": np.arange(schema.NUM_RESERVED, num_items),
                "item_id": [item_id(n) for n in vocab],
                "category_index": [cat_index[n // 10] for n in vocab],
                "category": [f"c{n // 10}" for n in vocab],
                "brand": [""] * len(vocab),
                "price": np.full(len(vocab), np.nan),
                "available": np.ones(len(vocab), bool),
                "train_count": train_count[schema.NUM_RESERVED :],
            }
        ),
        directory / schema.ITEM_FEATURES,
    )
    schema.FeatureSpec(
        max_len=MAX_LEN,
        num_items=num_items,
        num_categories=len(categories) + 2,
        num_users=len(users) + 2,
        ranking_task="next_item",
    ).write(directory)
    (directory / schema.STATS).write_text(
        json.dumps(
            {
                "users": len(users),
                "items": len(vocab),
                "categories": len(categories),
                "steps": sum(len(s) for s in sequences),
                "max_len": MAX_LEN,
                "split": "leave_last_out",
                "ranking_task": "next_item",
                "seed": seed,
                "source": "duckdb:///doubles.duckdb",
                "examples": counts,
            }
        )
    )
    return directory


class _Vocab:
    def __init__(self, item_ids: np.ndarray):
        self.number = np.array([int(i[1:]) if i else -1 for i in item_ids])
        self.index = np.full(NUM_CATALOGUE, schema.OOV_INDEX)
        known = self.number >= 0
        self.index[self.number[known]] = np.flatnonzero(known)

    def predicted_next(self, hist: np.ndarray) -> np.ndarray:
        last, previous = self.number[hist[:, -1]], self.number[hist[:, -2]] if hist.shape[1] > 1 else None
        step = np.ones(len(hist), np.int64)
        if previous is not None:
            diff = (last - previous) % NUM_CATALOGUE
            step = np.where((previous >= 0) & np.isin(diff, (1, 2)), diff, 1)
        return np.where(last >= 0, self.index[(last + step) % NUM_CATALOGUE], schema.PAD_INDEX)


class StepRetriever:
    def __init__(self, item_ids):
        self.vocab = _Vocab(item_ids)
        self.item_embeddings = np.eye(len(item_ids), dtype=np.float32)

    def encode(self, hist_items_idx, hist_cats_idx):
        query = np.zeros((len(hist_items_idx), self.item_embeddings.shape[0]), np.float32)
        query[np.arange(len(query)), self.vocab.predicted_next(hist_items_idx)] = 1.0
        query[:, schema.PAD_INDEX] = 0.0
        return query


class StepRanker:
    def __init__(self, item_ids):
        self.vocab = _Vocab(item_ids)
        self.item_category = np.where(self.vocab.number >= 0, self.vocab.number // 10 + 2, np.arange(len(item_ids)))

    def score(self, hist_items_idx, hist_cats_idx, cand_items_idx, cand_cats_idx, behaviour=None):
        assert behaviour is None or behaviour.types.shape == behaviour.gaps.shape == np.shape(hist_items_idx)
        predicted = self.vocab.predicted_next(hist_items_idx)[:, None]
        return np.where(cand_items_idx == predicted, 0.9, 0.2).astype(np.float32)


class RandomRetriever:
    def __init__(self, item_ids, seed=1):
        self.item_embeddings = np.random.default_rng(seed).normal(size=(len(item_ids), 8)).astype(np.float32)

    def encode(self, hist_items_idx, hist_cats_idx):
        return self.item_embeddings[hist_items_idx].mean(axis=1)


class RandomRanker:
    def __init__(self, item_ids, seed=2):
        self.bias = np.random.default_rng(seed).normal(size=len(item_ids))
        self.item_category = np.arange(len(item_ids))

    def score(self, hist_items_idx, hist_cats_idx, cand_items_idx, cand_cats_idx, behaviour=None):
        assert behaviour is None or behaviour.types.shape == behaviour.gaps.shape == np.shape(hist_items_idx)
        return (1 / (1 + np.exp(-self.bias[cand_items_idx]))).astype(np.float32)


KINDS = {"step": (StepRetriever, StepRanker), "random": (RandomRetriever, RandomRanker)}


def write_model(directory: Path, kind: str, item_ids) -> tuple[Path, Path]:
    """Two 'artifact' directories whose model.json names the double and its vocabulary."""
    for part in ("retrieval", "ranking"):
        (directory / part).mkdir(parents=True)
        (directory / part / "model.json").write_text(json.dumps({"kind": kind, "item_ids": list(item_ids)}))
    return directory / "retrieval", directory / "ranking"


def load_doubles(retrieval_dir, ranking_dir, version) -> ServingModel:
    """Each part's double from its own model.json, so a ranker of one kind can serve behind another's retriever."""
    spec = json.loads(Path(retrieval_dir, "model.json").read_text())
    item_ids = np.asarray(spec["item_ids"], dtype=object)
    retriever_cls = KINDS[spec["kind"]][0]
    ranker_cls = KINDS[json.loads(Path(ranking_dir, "model.json").read_text())["kind"]][1]
    return ServingModel(
        retriever=retriever_cls(item_ids), ranker=ranker_cls(item_ids), item_ids=item_ids, version=version
    )
