"""Builds a local DuckDB warehouse from a source (components.warehouse.sources: synthetic, amazon, taobao, events, ga4).

    python -m components.warehouse.build --source synthetic:default --seed 0 --out runs/shop.duckdb

Prints the row counts as JSON. The file appears only when complete (see duckdb_warehouse.WarehouseWriter).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from components.warehouse.duckdb_warehouse import build_warehouse


def main(argv: list[str] | None = None) -> None:
    """`python -m components.warehouse.build`: builds a DuckDB warehouse from a SOURCE and records where it came
    from."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="a SOURCE of components.warehouse.sources")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="DuckDB file to write")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = build_warehouse(args.source, args.out, args.seed)
    print(
        json.dumps(
            {"out": str(Path(args.out).resolve()), "counts": counts, "seconds": round(time.perf_counter() - started, 2)}
        )
    )


if __name__ == "__main__":
    main()
