"""make scale-bench: the bench on several synthetic shop sizes, and how each stage's cost grows with the events.

    python -m bench.scale --presets tiny,default,medium,large --out-dir runs/scale [--stages ...] [--seeds 1]

Each preset runs `bench.run` in a process of its own (so one preset's memory does not count in the next one's),
writing <out-dir>/<preset>.json (--reuse keeps one already there). Then, per stage, wall seconds, CPU seconds and peak memory are fitted against the
number of events as a power law (least squares on log-log, over every size and between the two largest), and <out-dir>/scale.json and scale.html hold the table,
the fitted exponents and log-log plots. An exponent above 1.15 is flagged: that stage grows worse than linearly.
A preset that fails keeps its JSON (bench.run's `failed`) and drops out of the fit of the stages it did not finish.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import subprocess
import sys
from pathlib import Path

from components.atomic import write_json, write_text
from components.warehouse.synthetic import PRESETS

MEASURES = {"wall_s": "stages", "cpu_s": "cpu_s", "peak_rss_mb": "peak_rss_mb"}
SUPERLINEAR = 1.15


def run_preset(preset: str, out_dir: Path, stages: str | None, seeds: int, reuse: bool = False) -> Path:
    """bench.run on one preset in a child process; its JSON path (written even when a stage failed). `reuse`: a JSON
    the preset already has in `out_dir` is kept instead (the large preset's bench alone takes over an hour)."""
    out = out_dir / f"{preset}.json"
    if reuse and out.exists():
        print(f"[scale] {preset}: reusing {out}", file=sys.stderr, flush=True)
        return out
    command = [sys.executable, "-m", "bench.run", "--data", preset, "--format", "synthetic", "--out", str(out)]
    command += ["--seeds", str(seeds)] + (["--stages", stages] if stages else [])
    print(f"[scale] {preset}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    completed = subprocess.run(command, check=False)
    if not out.exists():
        raise RuntimeError(f"bench.run on {preset} wrote no JSON (exit {completed.returncode})")
    return out


def rows(results: dict[str, dict]) -> list[dict]:
    """One row per (preset, stage): events, wall and CPU seconds, peak MiB."""
    table = []
    for preset, result in results.items():
        timing = result["timing"]
        for stage, wall in timing["stages"].items():
            row = {"preset": preset, "stage": stage, "events": result["events"], "wall_s": wall}
            row |= {m: timing.get(key, {}).get(stage) for m, key in MEASURES.items() if m != "wall_s"}
            table.append(row)
    return table


def exponent(points: list[tuple[float, float]]) -> float | None:
    """The slope b of log y = a + b log x by least squares; None below two distinct positive sizes."""
    points = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def fits(table: list[dict], largest: int | None = None) -> dict[str, dict[str, float | None]]:
    """stage -> measure -> fitted exponent against events, over every size or over the `largest` few: fixed costs
    (imports, Beam's start) flatten the small sizes, so the slope between the two largest is what a shop grows by."""
    out: dict[str, dict[str, float | None]] = {}
    for stage in dict.fromkeys(row["stage"] for row in table):
        mine = sorted((row for row in table if row["stage"] == stage), key=lambda row: row["events"])
        mine = mine[-largest:] if largest else mine
        out[stage] = {m: exponent([(row["events"], row[m]) for row in mine]) for m in MEASURES}
    return out


def findings(exponents: dict[str, dict[str, float | None]], where: str) -> list[str]:
    """One line per stage and measure that grows faster than linearly in events `where` (exponent above SUPERLINEAR)."""
    return [
        f"{stage}: {measure} grows as events^{value:.2f} {where} (above {SUPERLINEAR})"
        for stage, measures in exponents.items()
        for measure, value in measures.items()
        if value is not None and value > SUPERLINEAR
    ]


def _plot(table: list[dict], measure: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for stage in dict.fromkeys(row["stage"] for row in table):
        points = sorted((row["events"], row[measure]) for row in table if row["stage"] == stage and row[measure])
        if points:
            axes.plot(*zip(*points), marker="o", label=stage)
    axes.set(xscale="log", yscale="log", xlabel="events", ylabel=measure.replace("_", " "), title=title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def report_html(
    table: list[dict], exponents: dict, top: dict, flagged: list[str], parameters: dict | None = None
) -> str:
    """scale.html: the findings, the fitted exponents, a log-log plot per measure, the per-preset table and the
    pipeline parameters a preset ran with beyond the defaults."""

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return html.escape(value)
        return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"

    head = "".join(f"<th>{c}</th>" for c in ("preset", "stage", "events", "wall s", "CPU s", "peak MiB"))
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(row[c])}</td>" for c in ("preset", "stage", "events", *MEASURES)) + "</tr>"
        for row in table
    )
    fitted = "".join(
        f"<tr><td>{html.escape(stage)}</td>"
        + "".join(f"<td>{cell(exponents[stage][m])}</td><td>{cell(top[stage][m])}</td>" for m in MEASURES)
        + "</tr>"
        for stage in exponents
    )
    plots = "".join(
        f'<figure><img alt="{m} against events" src="data:image/png;base64,{_plot(table, m, f"{m} against events")}">'
        f"<figcaption>{m} per stage against events, log-log</figcaption></figure>"
        for m in MEASURES
    )
    notes = "".join(f"<li>{html.escape(f)}</li>" for f in flagged) or "<li>no stage grows faster than linearly</li>"
    ran_with = "".join(
        f"<li>{html.escape(preset)}: {html.escape(', '.join(f'{k}={v}' for k, v in values.items()))}</li>"
        for preset, values in (parameters or {}).items()
        if values
    )
    if ran_with:
        notes += (
            f"<li>these presets ran with their own pipeline parameters (pipelines/presets.py), so the exponents up "
            f"to them mix the code's growth with less work per event: <ul>{ran_with}</ul></li>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Scaling curve</title>"
        "<link rel='icon' href='data:,'><style>body{font-family:sans-serif;margin:2em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style>"
        f"</head><body><h1>Scaling curve</h1><h2>Findings (exponent above {SUPERLINEAR})</h2><ul>{notes}</ul>"
        "<h2>Fitted exponent against events</h2><p>Over every size, and between the two largest sizes (where fixed "
        "costs no longer flatten the curve).</p><table><tr><th>stage</th><th>wall s, all</th><th>wall s, largest</th>"
        "<th>CPU s, all</th><th>CPU s, largest</th><th>peak MiB, all</th><th>peak MiB, largest</th></tr>"
        f"{fitted}</table>{plots}<h2>Per preset</h2><table><tr>{head}</tr>{body}</table>"
        "</body></html>"
    )


def summarize(results: dict[str, dict], out_dir: Path) -> dict:
    """Fits every stage's exponents over the presets and writes scale.json and scale.html into `out_dir`."""
    table = rows(results)
    exponents, top = fits(table), fits(table, largest=2)
    flagged = findings(exponents, "over every size") + findings(top, "between the two largest sizes")
    summary = {
        "presets": list(results),
        # what each preset ran with (bench.run's settings.parameters: the large preset's own, pipelines/presets.py):
        # a point run with fewer epochs or a user sample is not the same work as one without, so an exponent between
        # such points mixes the code's growth with the parameters'
        "parameters": {preset: result.get("settings", {}).get("parameters", {}) for preset, result in results.items()},
        "rows": table,
        "exponents": exponents,
        "exponents_largest_two": top,
        "findings": flagged,
    }
    write_json(out_dir / "scale.json", summary)
    write_text(out_dir / "scale.html", report_html(table, exponents, top, flagged, summary["parameters"]))
    return summary


def main(argv: list[str] | None = None) -> int:
    """`make scale-bench`: the bench per preset, each in its own process, then the fits; 1 if a stage failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated synthetic shop presets")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/scale"))
    parser.add_argument("--stages", default=None, help="bench.run's --stages (default: all)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="keep a preset's JSON already in --out-dir, not re-run it")
    args = parser.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown or len(presets) < 2:
        parser.error(f"--presets needs two or more of {', '.join(PRESETS)}; unknown: {unknown}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        p: json.loads(run_preset(p, args.out_dir, args.stages, args.seeds, args.reuse).read_text()) for p in presets
    }
    summary = summarize(results, args.out_dir)
    for line in summary["findings"] or ["no stage grows faster than linearly"]:
        print(f"[scale] {line}", file=sys.stderr)
    print(f"[scale] wrote {args.out_dir / 'scale.json'} and scale.html", file=sys.stderr)
    return 1 if any(r["failed"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
