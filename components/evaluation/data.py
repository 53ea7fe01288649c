"""Evaluation's inputs: today's test split and training popularity, read once from the features output, and
the off-policy evaluation stage's output when the pipeline ran it."""
from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import numpy as np

from components import baselines, schema
from components.experiments.ope import ESTIMATORS


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


OFF_POLICY_FIGURES = {"ope_estimates": "ope_estimates.png", "bandit_curves": "bandit_curves.png"}
NO_OFF_POLICY_INPUT = "the pipeline passed no off-policy evaluation output"


@dataclasses.dataclass(frozen=True)
class OffPolicyOutput:
    """The off-policy evaluation stage's directory: ope.json {ab, ope, bandit, logged} and its figures, or why
    the stage had nothing to estimate (no impressions, no simulator)."""

    result: dict | None
    unavailable: str = ""  # why there is no result; "" when there is one
    figures: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> base64 PNG


def read_off_policy(directory: str | Path | None) -> OffPolicyOutput:
    """ope.json (with figures) or skipped.json from the stage's output; None means the stage was not wired in."""
    if directory is None:
        return OffPolicyOutput(None, NO_OFF_POLICY_INPUT)
    directory = Path(directory)
    if (directory / "ope.json").exists():
        result = json.loads((directory / "ope.json").read_text())
        missing = [key for key in ("ope", "bandit", "logged") if key not in result]
        missing += [f"ope.{key}" for key in ("truth", *ESTIMATORS) if key not in result.get("ope", {})]
        if missing:
            raise schema.SchemaError(f"{directory}/ope.json lacks {missing}: not an off-policy evaluation output")
        figures = {name: base64.b64encode((directory / file).read_bytes()).decode("ascii")
                   for name, file in OFF_POLICY_FIGURES.items() if (directory / file).exists()}
        return OffPolicyOutput(result, "", figures)
    if (directory / "skipped.json").exists():
        return OffPolicyOutput(None, json.loads((directory / "skipped.json").read_text())["skipped"])
    raise schema.SchemaError(f"{directory}: an off-policy evaluation output holds ope.json or skipped.json; "
                             "found neither")
