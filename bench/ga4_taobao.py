"""The Taobao sample in GA4's export shape, through the GA4 path: a bench, not a test (tests use the project's shop).

    python -m bench.ga4_taobao --data ../shared/data/taobao-userbehavior-sample/UserBehavior.csv.gz \
        --work /tmp/ga4-taobao [--format json|parquet] [--repeat N] [--pipeline [--param NAME=VALUE ...]] \
        --out ga4_taobao.json

Taobao's behaviour rows become GA4 daily export files (components.warehouse.ga4.write_export: pv -> view_item beside a
page_view, cart -> add_to_cart, fav -> add_to_wishlist, buy -> purchase). Its timestamps are whole seconds and a real
GA4 tag logs microseconds, so a user's events inside one second are spread by their file order, one microsecond
apart. --repeat N copies every user N times under new ids, to time the load on more rows. The JSON holds the row
count of each stage (Taobao rows, GA4 export rows, warehouse rows, extract, and with --pipeline the features'
examples, users and items, retrieval's metrics, the evaluation's gate and the export of a local kfp run) and the
GA4 load's seconds per million export rows. Files stay in --work (never in git).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from components import atomic
from components.extract.stage import run as run_extract
from components.warehouse import duckdb_warehouse, ga4, loaders


def taobao_as_contract(path: str, repeat: int) -> tuple[pa.Table, pa.Table]:
    """Taobao's events with same-second ties spread by file order (microseconds), copied `repeat` times."""
    events, items = loaders.load_taobao(path)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("e", events)
    spread = con.execute(f"""
        SELECT CASE WHEN r.k = 0 THEN user_id ELSE user_id || '-copy' || CAST(r.k AS VARCHAR) END AS user_id,
               item_id, event_type,
               event_ts + to_microseconds(CAST(ROW_NUMBER() OVER (PARTITION BY user_id, event_ts ORDER BY event_seq) - 1
                                                AS BIGINT)) AS event_ts,
               event_seq, session_id
        FROM e, range({repeat}) AS r(k)
        ORDER BY event_seq, r.k""").to_arrow_table()
    con.close()
    return spread.cast(events.schema), items


def stage_counts(run_dir: Path) -> dict:
    """Rows and figures per stage of a local pipeline run: the extract's manifest, the features' stats.json
    (examples, users, items), retrieval's validation metrics, the evaluation's blessing with its gate and funnel
    figures, and the export's rows (absent when not blessed)."""
    stats = json.loads(next(run_dir.glob("features/*/stats.json")).read_text())
    manifest = json.loads(next(run_dir.glob("extract/*/manifest.json")).read_text())
    out = {
        "extract": {"rows": manifest["rows"], "dropped": manifest["dropped"]},
        "features": {k: v for k, v in stats.items() if isinstance(v, (int, dict))},
    }
    retrieval = run_dir / "retrieval" / "executor_output.json"
    if retrieval.exists():
        (metrics,) = json.loads(retrieval.read_text())["artifacts"]["metrics"]["artifacts"]
        out["retrieval"] = metrics["metadata"]
    summary_path = run_dir / "evaluation" / "summary"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        gate = summary.get("gate", {})
        out["evaluation"] = {
            "blessed": summary["blessed"],
            "users": summary.get("users"),
            "items": summary.get("items"),
            "gate_metric": gate.get("metric"),
            "candidate": gate.get("candidate"),
            "reasons": gate.get("reasons", []),
            "export_n": summary.get("export_n"),
            "ranking_metrics": summary.get("ranking_metrics"),
        }
    export = run_dir / "export" / "executor_output.json"
    if export.exists():
        out["export"] = json.loads(export.read_text()).get("parameterValues", {})
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.ga4_taobao`: Taobao as GA4 export files, loaded and extracted (with --pipeline the whole DAG
    too)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Taobao UserBehavior CSV")
    parser.add_argument("--work", required=True, help="new folder for the export, warehouse and run")
    parser.add_argument("--format", choices=("json", "parquet"), default="json")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pipeline", action="store_true", help="also run the whole DAG locally on the export")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter of the --pipeline run, as pipelines.run takes it (e.g. ranking_epochs=1 on a "
        "shared machine)",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from pipelines.run import parse_params

    parameters = parse_params(args.param)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=False)
    events, items = taobao_as_contract(args.data, args.repeat)
    started = time.perf_counter()
    written = ga4.write_export(work / "export", events, items, fmt=args.format)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded = duckdb_warehouse.build_warehouse(f"ga4:{work / 'export'}", work / "warehouse.duckdb")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    manifest = run_extract(f"duckdb://{work / 'warehouse.duckdb'}", work / "extract")
    extract_s = time.perf_counter() - started
    result = {
        "taobao_rows": events.num_rows,
        "repeat": args.repeat,
        "format": args.format,
        "ga4_export": written,
        "warehouse": loaded,
        "extract": {"rows": manifest["rows"], "dropped": manifest["dropped"], "ga4": manifest["ga4"]},
        "timing": {
            "write_s": round(write_s, 2),
            "load_s": round(load_s, 2),
            "extract_s": round(extract_s, 2),
            "load_s_per_million_rows": round(load_s / loaded[ga4.TABLE] * 1e6, 2),
            "extract_s_per_million_rows": round(extract_s / loaded[ga4.TABLE] * 1e6, 2),
            "load_average": os.getloadavg()[0],
        },
    }
    if args.pipeline:
        from pipelines.run import run_local

        outputs = run_local(work / "run", f"ga4:{work / 'export'}", **parameters)
        result["pipeline"] = {
            "parameters": parameters,
            "seconds": outputs["seconds"],
            **stage_counts(Path(outputs["run"])),
        }
    atomic.write_json(Path(args.out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
