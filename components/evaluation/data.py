"""Evaluation's inputs: today's test split and training popularity, read once from the features output, and
the off-policy evaluation stage's output when the pipeline ran it."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from components import baselines, schema
from components.metrics import sample_users
from components.serving.funnel import Behaviour


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
    target_categories: np.ndarray  # object [U]: category id of each test target ("" for reserved)
    item_categories: np.ndarray  # object [num_items]: category id of every item index
    user_ids: np.ndarray  # object [U]: the test users' ids
    behaviour: Behaviour  # the histories' event types and gaps, aligned with hist_matrix
    users_total: int = 0  # test users in the split before sampling (== len(self) when every one is scored)

    @property
    def num_items(self) -> int:
        """The vocabulary size the scores are over, reserved indices included."""
        return len(self.item_ids)

    @property
    def history_lengths(self) -> np.ndarray:
        """int64 [users]: each test user's history length, for the by-history-length breakdown."""
        return np.fromiter((len(h) for h in self.hist_items), dtype=np.int64, count=len(self.hist_items))

    def __len__(self) -> int:
        return len(self.targets)


def _take_rows(examples: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: column[rows] for name, column in examples.items()}


def read_test_split(features_dir: str | Path, split: str = "test", max_users: int = 0) -> TestSplit:
    """Reads vocabulary, the retrieval and ranking examples of `split`, and the train sequences. With `max_users`
    only that many test users (metrics.sample_users) are kept, with their ranking rows: full-catalogue scoring costs
    users x items, which a shop with millions of users bounds here rather than with a bigger machine."""
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
    users = schema.indexed_vocab(features_dir, schema.USER_VOCAB)
    users_total = len(examples[schema.TARGET_ITEM])
    kept = sample_users(users[examples[schema.USER].astype(np.int64)], max_users)
    examples = _take_rows(examples, kept)
    train = baselines.from_features(features_dir)
    try:
        ranking = reader.load_numpy(features_dir, schema.RANKING_DIR, split)
    except schema.SchemaError:
        ranking = None
    if ranking is not None and len(kept) < users_total:
        ranking = _take_rows(ranking, np.flatnonzero(np.isin(ranking[schema.USER], examples[schema.USER])))
    categories = np.asarray(
        [""] * schema.NUM_RESERVED + schema.read_vocab(features_dir, schema.CATEGORY_VOCAB), dtype=object
    )
    return TestSplit(
        item_ids=item_ids,
        hist_items=examples[schema.HIST_ITEMS],
        hist_matrix=reader.pad_left(examples[schema.HIST_ITEMS], spec.max_len),
        seen_items=examples[schema.SEEN_ITEMS],
        targets=examples[schema.TARGET_ITEM].astype(np.int64),
        train=train,
        popularity=baselines.item_counts(train),
        ranking=ranking,
        target_categories=categories[examples[schema.TARGET_CAT].astype(np.int64)],
        item_categories=categories[_item_category_index(features_dir, spec.num_items)],
        user_ids=users[examples[schema.USER].astype(np.int64)],
        behaviour=Behaviour.of_examples(examples, spec.max_len),
        users_total=users_total,
    )


def _item_category_index(features_dir: str | Path, num_items: int) -> np.ndarray:
    """Category index of every item index (reserved indices map to the reserved category 0)."""
    frame = pd.read_parquet(Path(features_dir, schema.ITEM_FEATURES), columns=["item_index", "category_index"])
    table = np.zeros(num_items, np.int64)
    table[frame["item_index"].to_numpy()] = frame["category_index"].to_numpy()
    return table


def read_training_curves(retrieval_dir: str | Path, ranking_dirs: dict[str, str | Path]) -> dict[str, dict]:
    """Per-epoch training loss and valid metric of retrieval and of each ranker, from what their artifacts
    recorded: {"retrieval": {"loss": [...], "valid": {"ndcg@20": [...], ...}}, "<ranker>": {...}}. A model whose
    artifact recorded no curve (one written before curves were kept) is left out."""
    from components.retrieval.export import TRAINING_HISTORY as RETRIEVAL_HISTORY

    curves = {}
    path = Path(retrieval_dir, RETRIEVAL_HISTORY)
    if path.exists():
        epochs = json.loads(path.read_text())["epochs"]
        curves["retrieval"] = {
            "loss": [e["loss"] for e in epochs],
            "valid": {m: [e[m] for e in epochs] for m in ("hit@20", "ndcg@20")},
        }
    for name, directory in ranking_dirs.items():
        exists = Path(directory, schema.RANKER_INFO_FILE).exists()
        recorded = schema.RankerInfo.read(directory).test_metrics if exists else {}
        if recorded.get("valid_auc_by_epoch"):
            curves[name] = {"loss": recorded.get("loss_by_epoch", []), "valid": {"auc": recorded["valid_auc_by_epoch"]}}
    return curves


def read_run_metadata(
    features_dir: str | Path,
    retrieval_dir: str | Path,
    ranking_dirs: dict[str, str | Path],
    extracted_dir: str | Path | None = None,
) -> dict:
    """Where the data came from and with which settings each stage ran, as the stages' own outputs recorded it:
    the extract manifest (source, window, rows), the features stats, retrieval's config and each ranker's
    train_config. The image tag and the code version say which code ran."""
    from components import image

    stats = schema.FeaturesManifest.read(features_dir).to_json()
    extract = {}
    if extracted_dir is not None and Path(extracted_dir, "manifest.json").exists():
        extract = json.loads(Path(extracted_dir, "manifest.json").read_text())
    parameters = {
        "extract": {
            k: extract[k] for k in ("window_start", "window_end", "event_types", "min_events_per_user") if k in extract
        },
        "features": {
            k: stats[k] for k in ("max_len", "split", "ranking_task", "seed", "max_examples_per_user") if k in stats
        },
    }
    if Path(retrieval_dir, schema.RETRIEVAL_CONFIG_FILE).exists():
        parameters["retrieval"] = schema.RetrievalModelConfig.read(retrieval_dir).config
    for name, directory in ranking_dirs.items():
        if Path(directory, schema.RANKER_INFO_FILE).exists():
            recorded = schema.RankerInfo.read(directory)
            parameters[name] = {**recorded.train_config, **recorded.model_config}
    return {
        "source": extract.get("source") or stats.get("source"),
        "rows": extract.get("rows", {}),
        "counts": {k: stats[k] for k in ("events", "users", "items", "categories", "steps") if k in stats},
        "parameters": parameters,
        "image": image.IMAGE,
        "code_version": {"content_hash": image.content_hash(), "git_commit": _git_commit(image.ROOT)},
    }


def _git_commit(root: Path) -> str | None:
    """The checkout's commit (with "+changes" when the tree differs from it); None in an image, which has no .git:
    there the content hash, which is also the image tag, names the code."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "")


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
        missing += [f"ope.{key}" for key in ("truth", *schema.OPE_ESTIMATORS) if key not in result.get("ope", {})]
        if missing:
            raise schema.SchemaError(f"{directory}/ope.json lacks {missing}: not an off-policy evaluation output")
        figures = {
            name: base64.b64encode((directory / file).read_bytes()).decode("ascii")
            for name, file in OFF_POLICY_FIGURES.items()
            if (directory / file).exists()
        }
        return OffPolicyOutput(result, "", figures)
    if (directory / "skipped.json").exists():
        return OffPolicyOutput(None, json.loads((directory / "skipped.json").read_text())["skipped"])
    raise schema.SchemaError(
        f"{directory}: an off-policy evaluation output holds ope.json or skipped.json; found neither"
    )


CAMPAIGN_FILE = "campaign.json"  # in the campaign evaluation's artifact folder (export.campaign_eval.CAMPAIGN_FILE)


def read_campaign(path: str | Path | None) -> dict | None:
    """The campaign evaluation's JSON (components.export.campaign_eval writes it before this stage runs: a file, so
    evaluation does not import export); None when the stage was not wired in."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():  # the task's artifact is a folder holding campaign.json
        path = path / CAMPAIGN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise schema.SchemaError(f"campaign evaluation output {path}: unreadable ({err})") from err
