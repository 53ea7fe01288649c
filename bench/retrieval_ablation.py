"""The retrieval ablation: one row per setting, each trained on the same features output, chosen on valid.

    python -m bench.retrieval_ablation --features <features dir> --out <file.json> [--rows a,b] [--seeds N]

Build the features once (`python -m bench.run ... --stages warehouse,extract,features --work-dir W`,
then --features W/features). Each row is the shipped RetrievalConfig with the overrides in ROWS;
it trains (selecting its epoch on valid NDCG@20), and only then is scored on test. The JSON holds
valid and test metrics, train_s and train_examples_per_s per row and seed; the Markdown table
printed at the end holds the medians over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
from pathlib import Path

from components.atomic import write_json
from components.retrieval import training
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import load_examples

FULL_SIZE = dict(
    loss="mixed",
    num_negatives=2048,
    every_position=True,
    max_len=50,
    dropout=0.3,
    batch_size=64,
    learning_rate=2e-3,
    epochs=30,
    patience=3,
)
# name: RetrievalConfig overrides, in the order the issue asked the questions
ROWS: dict[str, dict] = {
    "seed_gru_in_batch": dict(
        encoder="gru", loss="in_batch", every_position=False, max_len=20, time_gaps=False, embedding_dim=64
    ),
    # the shipped default of sessions 7-8: the seed's with the query tower reading time
    "gru_in_batch_time_gaps": dict(
        encoder="gru", loss="in_batch", every_position=False, max_len=20, time_gaps=True, embedding_dim=64
    ),
    # the shipped default since session 9: the same at 128 dimensions
    "gru_in_batch_time_gaps_128": dict(
        encoder="gru", loss="in_batch", every_position=False, max_len=20, time_gaps=True, embedding_dim=128
    ),
    # every position against one example per prefix, all else the seed's: ~1,000 targets per batch as the seed's 1,024
    "gru_in_batch_every_position_170": dict(
        encoder="gru", loss="in_batch", every_position=True, max_len=20, batch_size=170, time_gaps=False
    ),
    # the literature's recipe (SASRec/gSASRec, BSARec): full softmax at every position on dot products, 50 steps,
    # dropout 0.5, lr 1e-3, batches of 256 sequences, long patience
    "gru_full_every_position_dot": dict(
        encoder="gru",
        loss="full_softmax",
        every_position=True,
        max_len=50,
        normalize=False,
        temperature=1.0,
        dropout=0.5,
        learning_rate=1e-3,
        batch_size=256,
        epochs=40,
        patience=4,
        time_gaps=False,
    ),
    # session 9: the default (time gaps on) with one setting changed each
    "gru_in_batch_cosine": dict(
        encoder="gru", loss="in_batch", every_position=False, max_len=20, lr_schedule="cosine", embedding_dim=64
    ),
    "gru_full_softmax": dict(encoder="gru", loss="full_softmax", every_position=False, max_len=20),
    "gru_mixed": dict(encoder="gru", loss="mixed", every_position=False, max_len=20),
    "gru_full_every_position": dict(encoder="gru", loss="full_softmax", every_position=True),
    "gru_mixed_every_position": dict(encoder="gru", loss="mixed", every_position=True),
    "gru_in_batch_every_position": dict(encoder="gru", loss="in_batch", every_position=True),
    "self_attention_full_every_position": dict(encoder="self_attention", loss="full_softmax", every_position=True),
    "filter_full_every_position": dict(encoder="filter", loss="full_softmax", every_position=True),
    "mean_full_every_position": dict(encoder="mean", loss="full_softmax", every_position=True),
    # full size (issue 16's untried rows): 50 steps, 2,048 uniform negatives, small batches of user sequences
    "self_attention_mixed_every_position_50": dict(FULL_SIZE, encoder="self_attention"),
    "self_attention_lag_mixed_every_position_50": dict(FULL_SIZE, encoder="self_attention", positions="lag"),
    "filter_lag_mixed_every_position_50": dict(FULL_SIZE, encoder="filter", positions="lag"),
}
KEYS = ("hit@10", "ndcg@10", "hit@20", "ndcg@20")


def parse_overrides(items: list[str]) -> dict:
    """["epochs=4", "every_position=true"] -> RetrievalConfig overrides of the fields' own types."""
    defaults = RetrievalConfig()
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if not hasattr(defaults, name):
            raise ValueError(f"--set {item}: RetrievalConfig has no field {name!r}")
        kind = type(getattr(defaults, name))
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def run_row(features_dir: str, overrides: dict, seed: int) -> dict:
    """One row of the ablation: retrieval trained with `overrides` on one seed, its valid and test metrics and speed."""
    config = dataclasses.replace(RetrievalConfig(), **{"seed": seed, **overrides})  # --set seed=K picks one seed
    result = training.train_from_features(features_dir, config)
    test = training.evaluate(result.model, load_examples(features_dir, "test", config.max_len))
    return {
        "config": dataclasses.asdict(config),
        "valid": result.valid_metrics,
        "test": test,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_s": result.train_s,
        "train_cpu_s": result.train_cpu_s,
        "train_examples_per_s": result.train_examples_per_s,
        "load_average": os.getloadavg()[0],
    }


def table(results: dict[str, list[dict]]) -> str:
    """The ablation as a Markdown table of medians over seeds, one setting per row."""
    header = ["setting", *(f"valid {k}" for k in KEYS), *(f"test {k}" for k in KEYS), "train s", "examples/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in results.items():
        cells = [statistics.median(r[split][k] for r in runs) for split in ("valid", "test") for k in KEYS]
        speed = [statistics.median(r[k] for r in runs) for k in ("train_s", "train_examples_per_s")]
        lines.append(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {speed[0]:.0f} | {speed[1]:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.retrieval_ablation`: trains each setting of ROWS and writes the JSON and the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, help="a features output directory")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a RetrievalConfig field in every row (repeatable), e.g. --set epochs=4",
    )
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s) {unknown}; known: {', '.join(ROWS)}")
    try:
        extra = parse_overrides(args.set)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results: dict[str, list[dict]] = {}
    for name in rows:
        results[name] = [run_row(args.features, {**ROWS[name], **extra}, seed) for seed in range(args.seeds)]
        write_json(args.out, {"rows": results, "overrides": extra})  # each finished row survives a later crash
        print(table({name: results[name]}).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
