"""Builds a local DuckDB warehouse from a source: `synthetic:<preset>`, `amazon:<csv path>` or `taobao:<csv path>`.

    python -m components.warehouse.build --source synthetic:default --seed 0 --out runs/shop.duckdb

Prints the row counts as JSON. The file appears only when complete (see duckdb_warehouse.WarehouseWriter).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from components.warehouse import loaders, synthetic
from components.warehouse.duckdb_warehouse import WarehouseWriter

SOURCE_KINDS = ("synthetic", "amazon", "taobao")


def parse_source(source: str) -> tuple[str, str]:
    kind, sep, arg = source.partition(":")
    if not sep or kind not in SOURCE_KINDS or not arg:
        raise ValueError(f"source {source!r} must be one of synthetic:<preset>, amazon:<path>, taobao:<path>")
    return kind, arg


def build_warehouse(source: str, out_path: str | Path, seed: int = 0) -> dict[str, int]:
    """Writes the warehouse for `source` to out_path; returns row counts per table.

    The seed matters for synthetic sources only (public data is loaded as is).
    """
    kind, arg = parse_source(source)
    if kind == "synthetic":
        world = synthetic.make_world(arg, seed)
        with WarehouseWriter(out_path, ("events", "items", "impressions")) as writer:
            writer.append("items", synthetic.items_table(world))
            for chunk in synthetic.iter_chunks(world):
                writer.append("events", chunk.events)
                writer.append("impressions", chunk.impressions)
            return writer.commit()
    events, items = loaders.load_amazon(arg) if kind == "amazon" else loaders.load_taobao(arg)
    with WarehouseWriter(out_path, ("events", "items")) as writer:
        writer.append("items", items)
        writer.append("events", events)
        return writer.commit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="synthetic:<preset> | amazon:<path> | taobao:<path>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="DuckDB file to write")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = build_warehouse(args.source, args.out, args.seed)
    print(json.dumps({"out": str(Path(args.out).resolve()), "counts": counts,
                      "seconds": round(time.perf_counter() - started, 2)}))


if __name__ == "__main__":
    main()
