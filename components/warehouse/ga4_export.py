"""Writes any warehouse source as GA4 export files, so the synthetic shop can be run through the GA4 path:

    python -m components.warehouse.ga4_export --source synthetic:tiny --out runs/ga4-tiny [--format parquet]

A module of its own because it needs both the loaders (duckdb_warehouse) and the GA4 writer (ga4), which the
loaders themselves use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.warehouse.duckdb_warehouse import build_warehouse, connect
from components.warehouse.ga4 import write_export


def main(argv: list[str] | None = None) -> None:
    """`python -m components.warehouse.ga4_export`: writes a source's events as GA4 daily export files."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--source", required=True, help="any warehouse source but ga4: synthetic:<preset>, taobao:<path>, ..."
    )
    parser.add_argument("--out", required=True, help="new folder for the events_YYYYMMDD files")
    parser.add_argument("--format", choices=("json", "parquet"), default="json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scratch = Path(args.out).with_name(f".{Path(args.out).name}.warehouse.duckdb")
    build_warehouse(args.source, scratch, seed=args.seed)
    try:
        con = connect(scratch)
        tables = {
            name: con.execute(f"SELECT * FROM {name}").to_arrow_table()
            for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        con.close()
        counts = write_export(args.out, tables["events"], tables["items"], tables.get("impressions"), args.format)
    finally:
        scratch.unlink(missing_ok=True)
    print(json.dumps({"out": str(Path(args.out).resolve()), **counts}))


if __name__ == "__main__":
    main()
