"""New items (cold start) in the benches: HIT@20 on test targets whose item has no train target, against
popularity within the item's category (components.baselines.category_popularity_top_k), for the lifecycle week
(bench/lifecycle.py) and for bench.run --split time (retrieval.new_items)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components import schema
from components.retrieval.index import BruteForce


def new_item_rows(test, catalogue) -> np.ndarray:
    """Rows of `test` (retrieval Examples) whose target item has no train target and whose history is not empty."""
    return rows_with_history(test, np.flatnonzero(catalogue.train_count[test.target_item] == 0))


def rows_with_history(test, rows: np.ndarray | None = None) -> np.ndarray:
    """Those of `rows` of `test` (default: every row) whose history is not empty: the baseline reads its last item."""
    rows = np.arange(len(test.target_item)) if rows is None else rows
    return rows[(test.hist_items[rows] != schema.PAD_INDEX).any(axis=1)]


def top_lists(queries: np.ndarray, item_embeddings: np.ndarray, seen, available: np.ndarray, k: int = 20):
    """Each query's top-`k` available items [n, k] by dot product, best first, reserved ids and the row's `seen` items
    masked: the exact index's search (index.BruteForce), chunked, where one [n, items] matrix was 8.4 GB of peak memory
    on Taobao (7,400 new-item rows x 55k items: the scores, their negation and argpartition's int64 indices)."""
    return BruteForce(item_embeddings, available).search(queries, k, seen)[0]


def category_popularity_lists(catalogue, test, rows: np.ndarray, k: int = 20) -> np.ndarray:
    """The baseline's top-`k` [len(rows), k] for the test `rows`: the last history item's category first."""
    from components.baselines import category_popularity_top_k

    last = np.array([h[h != schema.PAD_INDEX][-1] for h in test.hist_items[rows]], np.int64)
    seen = [test.seen_items[r] for r in rows]
    return category_popularity_top_k(last, seen, catalogue.item_category, catalogue.train_count, catalogue.available, k)


def hits(lists: np.ndarray, targets: np.ndarray) -> list[int]:
    """1 where a row's target is in its list, else 0."""
    return [int(t in row) for row, t in zip(lists, targets)]


def by_path(rows) -> dict:
    """HIT@20 of a model and of the baseline on the same new-item targets, split by how the model scores the target:
    `by_id` (its id row was trained: the refit through valid learnt an item launched on the valid day, or a warm
    start's parent did) or `features_only` (category, brand and price rows: an item first seen on the test day).
    `rows`: (model hit, baseline hit, known by id) per target; the two paths' gaps to the baseline differ in kind."""
    out = {}
    for path, wanted in (("by_id", True), ("features_only", False)):
        chosen = [(hit, base) for hit, base, known in rows if bool(known) == wanted]
        out[path] = {
            "targets": len(chosen),
            "hit@20": round(float(np.mean([h for h, _ in chosen])), 6) if chosen else None,
            "category_popularity": round(float(np.mean([b for _, b in chosen])), 6) if chosen else None,
        }
    return out


def retrieval_report(features_dir: str | Path, retrieval_dir: str | Path, k: int = 20) -> dict:
    """retrieval.new_items of bench.run on a time split: the exported retrieval model's HIT@k on test targets that
    are new items (first seen after the cut) and the category-popularity baseline's on the same targets."""
    from components.retrieval.config import RetrievalConfig
    from components.retrieval.data import load_catalogue, load_examples
    from components.retrieval.model_io import load_retriever

    catalogue = load_catalogue(features_dir)
    retriever = load_retriever(retrieval_dir)
    test = load_examples(features_dir, "test", RetrievalConfig.read(retrieval_dir).max_len)
    rows = new_item_rows(test, catalogue)
    if not len(rows):
        return {"targets": 0}
    from components.serving.funnel import Behaviour

    gaps, request = test.gaps()
    steps = Behaviour(np.zeros_like(gaps[rows]), gaps[rows], request[rows])
    queries = retriever.encode(test.hist_items[rows], test.hist_cats[rows], behaviour=steps)
    seen = [test.seen_items[r] for r in rows]
    model = top_lists(queries, np.asarray(retriever.item_embeddings, np.float32), seen, catalogue.available, k)
    baseline = category_popularity_lists(catalogue, test, rows, k)
    targets = test.target_item[rows]
    return {
        "targets": int(len(rows)),
        f"hit@{k}": float(np.mean(hits(model, targets))),
        f"category_popularity_hit@{k}": float(np.mean(hits(baseline, targets))),
        "new_items_in_test": int(len(np.unique(targets))),
    }


def main(argv: list[str] | None = None) -> None:
    """One retrieval training on a features output (a time split) with RetrievalConfig overrides: its valid and test
    NDCG@20 and the new-item report, appended to --out under the overrides' name (choosing an option on valid).

        python -m bench.new_items --features <features dir> --out <file.json> [--seed 0] [--set id_dropout=0.3]
    """
    import argparse
    import dataclasses
    import json
    import tempfile

    from components import atomic
    from components.retrieval import export, training
    from components.retrieval.config import RetrievalConfig
    from components.retrieval.data import load_examples

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--features", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="a RetrievalConfig field: name=value")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)
    config = dataclasses.replace(RetrievalConfig(), seed=args.seed, **overrides)
    result = training.train_from_features(args.features, config)
    test = training.evaluate(result.model, load_examples(args.features, "test", config.max_len))
    with tempfile.TemporaryDirectory() as model_dir:
        export.export(result.model, result.catalogue, config, model_dir)
        new = retrieval_report(args.features, model_dir)
    row = {
        "overrides": overrides,
        "seed": args.seed,
        "valid": result.valid_metrics,
        "test": test,
        "new_items": new,
        "best_epoch": result.best_epoch,
        "train_cpu_s": result.train_cpu_s,
    }
    current = json.loads(args.out.read_text()) if args.out.exists() else {}
    current[",".join(args.set) or "default"] = row
    atomic.write_json(args.out, current)
    print(json.dumps({k: row[k] for k in ("overrides", "new_items")} | {"valid_ndcg@20": row["valid"]["ndcg@20"]}))


if __name__ == "__main__":
    main()
