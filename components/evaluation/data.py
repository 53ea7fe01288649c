"""Today's test split and training popularity, read once from the features output."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from components import baselines, schema


@dataclasses.dataclass
class TestSplit:
    """One test example per user (retrieval) plus the ranking test rows, in the features vocabulary."""

    item_ids: np.ndarray  # object [num_items]: index -> item id, "" at reserved indices
    hist_items: np.ndarray  # object [U] of int64 arrays, oldest first
    hist_matrix: np.ndarray  # int64 [U, max_len], left-padded
    seen_items: np.ndarray  # object [U] of int64 arrays
    targets: np.ndarray  # int64 [U]
    train: baselines.TrainingSequences
    popularity: np.ndarray  # float64 [num_items]: occurrences in the training sequences
    ranking: dict[str, np.ndarray] | None  # ranking test rows (reader.load_numpy layout), None if absent

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def history_lengths(self) -> np.ndarray:
        return np.fromiter((len(h) for h in self.hist_items), dtype=np.int64, count=len(self.hist_items))

    def __len__(self) -> int:
        return len(self.targets)


def read_test_split(features_dir: str | Path, split: str = "test") -> TestSplit:
    """Reads vocabulary, the retrieval and ranking examples of `split`, and the train sequences."""
    from components.features import reader  # TensorFlow: only when reading TFRecords

    spec = schema.FeatureSpec.read(features_dir)
    vocab = schema.read_vocab(features_dir, schema.ITEM_VOCAB)
    if len(vocab) + schema.NUM_RESERVED != spec.num_items:
        raise schema.SchemaError(
            f"{features_dir}: {schema.ITEM_VOCAB} has {len(vocab)} ids but feature_spec says num_items={spec.num_items}"
        )
    item_ids = np.asarray([""] * schema.NUM_RESERVED + vocab, dtype=object)
    examples = reader.load_numpy(features_dir, schema.RETRIEVAL_DIR, split)
    if not len(examples.get(schema.TARGET_ITEM, ())):
        raise schema.SchemaError(f"{features_dir}: the {split} split has no retrieval examples")
    train = baselines.from_features(features_dir)
    try:
        ranking = reader.load_numpy(features_dir, schema.RANKING_DIR, split)
    except schema.SchemaError:
        ranking = None
    return TestSplit(
        item_ids=item_ids,
        hist_items=examples[schema.HIST_ITEMS],
        hist_matrix=reader.pad_left(examples[schema.HIST_ITEMS], spec.max_len),
        seen_items=examples[schema.SEEN_ITEMS],
        targets=examples[schema.TARGET_ITEM].astype(np.int64),
        train=train,
        popularity=baselines.item_counts(train),
        ranking=ranking,
    )
