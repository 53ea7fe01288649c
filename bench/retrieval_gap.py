"""Why test trails valid: one trained retrieval model, the test query taken apart against the valid one.

    python -m bench.retrieval_gap --features <features dir> --extracted <extract dir> --out <file.json> [--set k=v]

Each figure is valid vs test HIT@20 / NDCG@20 on one slice or variant of the query:
- as the stage scores them; then test with the valid query's history (the valid item left out of
  the history, still masked), which separates "a harder target" from "a worse query";
- by whether the history fills max_len (truncation), whether the target repeats a history item
  (masking), whether the last two events share a day (ties), and the target's train popularity
  (what the logQ correction, used in training only, shifts);
- the baselines (popularity, item-to-item) on valid and test, which no model selection touches.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.retrieval_ablation import parse_overrides
from components import baselines, metrics, schema
from components.atomic import write_json
from components.retrieval import evaluation, training
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import Examples, load_examples

POPULARITY_EDGES = (1, 5, 20, 100)  # train-count buckets of the target: 0, 1-4, 5-19, 20-99, 100+


def _by_user(examples: Examples) -> Examples:
    order = np.argsort(examples.user, kind="stable")
    return Examples(
        examples.hist_items[order],
        examples.hist_cats[order],
        examples.target_item[order],
        examples.user[order],
        examples.seen_items[order],
    )


def _summary(ranks: metrics.Ranks) -> dict:
    if not len(ranks):
        return {"users": 0}  # an empty slice has no metrics, not zeros
    values = metrics.ranking_metrics(ranks)
    return {"users": len(ranks), "hit@20": values["hit@20"], "ndcg@20": values["ndcg@20"]}


def same_day_users(extracted_dir: str | Path, features_dir: str | Path) -> np.ndarray:
    """User vocabulary indices whose last two events share a timestamp (Beauty: day resolution)."""
    events = pd.read_parquet(Path(extracted_dir, "events.parquet"), columns=["user_id", "event_ts", "event_seq"])
    events = events.sort_values(["user_id", "event_ts", "event_seq"])
    last_two = events.groupby("user_id").tail(2).groupby("user_id")["event_ts"]
    tied = last_two.nunique() == 1
    vocab = schema.read_vocab(features_dir, schema.USER_VOCAB)
    index = {user: n + schema.NUM_RESERVED for n, user in enumerate(vocab)}
    return np.array([index[u] for u in tied[tied].index if u in index], dtype=np.int64)


def gap_report(features_dir: str, extracted_dir: str, config: RetrievalConfig) -> dict:
    """Why test trails valid: valid against test HIT@20 and NDCG@20 of one trained model, slice by slice (module
    docstring)."""
    result = training.train_from_features(features_dir, config)
    model, catalogue = result.model, result.catalogue
    valid = _by_user(load_examples(features_dir, "valid", config.max_len))
    test = _by_user(load_examples(features_dir, "test", config.max_len))
    if not np.array_equal(valid.user, test.user):
        raise ValueError("valid and test do not hold the same users")
    items = model.item_embeddings()
    ranks = {}
    for name, split in (("valid", valid), ("test", test)):
        queries = training.encode_queries(model, split.hist_items, split.hist_cats)
        ranks[name] = evaluation.target_ranks(queries, items, split.target_item, split.seen_items)
    valid_queries = training.encode_queries(model, valid.hist_items, valid.hist_cats)
    test_from_valid_query = evaluation.target_ranks(valid_queries, items, test.target_item, test.seen_items)

    lengths = {n: (s.hist_items != schema.PAD_INDEX).sum(axis=1) for n, s in (("valid", valid), ("test", test))}
    full_lengths = {
        n: (load_examples(features_dir, n, 10_000).hist_items != schema.PAD_INDEX).sum(axis=1)
        for n in ("valid", "test")
    }
    repeat = {
        n: np.array([t in set(seen.tolist()) for t, seen in zip(s.target_item, s.seen_items)])
        for n, s in (("valid", valid), ("test", test))
    }
    tied = np.isin(test.user, same_day_users(extracted_dir, features_dir))
    count = {n: catalogue.train_count[s.target_item] for n, s in (("valid", valid), ("test", test))}
    bucket = {n: np.searchsorted(POPULARITY_EDGES, c, side="right") for n, c in count.items()}
    labels = ["0", "1-4", "5-19", "20-99", "100+"]

    def both(select: dict[str, np.ndarray]) -> dict:
        return {n: _summary(ranks[n].subset(select[n])) for n in ("valid", "test")}

    report = {
        "config": dataclasses.asdict(config),
        "best_epoch": result.best_epoch,
        "all": both({"valid": slice(None), "test": slice(None)}),
        "test_with_the_valid_query": _summary(test_from_valid_query),
        "history_fills_max_len": both({n: lengths[n] >= config.max_len for n in lengths}),
        "history_shorter_than_max_len": both({n: lengths[n] < config.max_len for n in lengths}),
        "share_truncated": {n: float((full_lengths[n] > config.max_len).mean()) for n in full_lengths},
        "target_repeats_a_history_item": both(repeat),
        "share_repeats": {n: float(r.mean()) for n, r in repeat.items()},
        "last_two_events_same_day": both({"valid": tied, "test": tied}),
        "last_two_events_other_days": both({"valid": ~tied, "test": ~tied}),
        "share_same_day": float(tied.mean()),
        "target_train_count_median": {n: float(np.median(c)) for n, c in count.items()},
        "by_target_train_count": {
            label: {
                **both({n: bucket[n] == b for n in bucket}),
                "share": {n: float((bucket[n] == b).mean()) for n in bucket},
            }
            for b, label in enumerate(labels)
        },
    }
    sequences = baselines.from_features(features_dir)
    for baseline in (baselines.Popularity(sequences), baselines.ItemToItem(sequences)):
        report[f"baseline_{baseline.name}"] = {
            n: _summary(baselines.evaluate(baseline, [r[r > 0] for r in s.hist_items], s.target_item, s.seen_items))
            for n, s in (("valid", valid), ("test", test))
        }
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.retrieval_gap`: the valid-test gap report of one retrieval configuration as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True)
    parser.add_argument("--extracted", required=True, help="the extract output (events.parquet) of the same run")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = gap_report(args.features, args.extracted, dataclasses.replace(RetrievalConfig(), **overrides))
    write_json(args.out, report)
    print(pd.json_normalize(report, sep=".").T.to_string(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
