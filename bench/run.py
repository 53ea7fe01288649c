"""make bench: runs the whole pipeline locally on one data set and writes one JSON.

    python -m bench.run --data <file or preset> --format amazon|taobao|synthetic --out <file.json> --seeds N

Stages run in DAG order as plain Python calls (bench/stages.py), each in a fresh process of its own (as each is its
own container in the pipeline: components/isolation.py), in a temporary directory:
warehouse -> extract -> features -> baselines -> retrieval -> ranking -> evaluation (funnel) ->
export -> campaign (complementary items, audiences) -> experiments. Each is timed: wall seconds (timing.stages.<stage>),
CPU seconds (timing.cpu_s.<stage>) and peak memory of the process tree (timing.peak_rss_mb.<stage>, Beam's workers
included: bench/resources.py); timing.total_s, peak_rss_mb (the largest stage's), events/users/items
and every stage's keys go into the JSON. A stage that cannot run is listed under `skipped` with the reason, one that crashed under
`failed` (and the exit code is 1); neither leaves guessed keys behind.
--ablations dien_no_aux also trains DIEN without its auxiliary loss in the ranking stage.
--split time [--split-cut ISO] [--split-window-days d] builds the features on the time split instead of the data's
(leave_last_out for Amazon and synthetic): train before the cut, valid and test the next two windows of d days, and
the items first seen after the cut are new items (retrieval.new_items: their HIT@20 against popularity within the
category).
--param NAME=VALUE (repeatable; make bench PARAMS="name=value ...") runs the stages with a pipeline parameter, as
`make pipeline-run PARAMS=...` does; a synthetic preset that a shop of its size would run differently (the large
one: pipelines/presets.py) brings its own, which --param overrides. The JSON's `settings` records what ran.
With --seeds n the model stages (retrieval, ranking, evaluation) run once per seed 0..n-1 and each
metric is the median, with `per_seed` and `spread` beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import aggregate, resources, stages
from components.atomic import write_json
from components.isolation import in_fresh_process

SEEDED_STAGES = ("retrieval", "ranking", "evaluation")
ALL_STAGES = ("warehouse", "extract", "features", "baselines", *SEEDED_STAGES, "export", "campaign", "experiments")


def log(message: str) -> None:
    """A timestamped progress line on stderr, so the bench JSON stays the only output file."""
    print(f"[bench {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process or of its largest finished child, in MiB (Linux: KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def _stage_calls(ctx: stages.Context, stage: str) -> list[Callable[[], dict]]:
    """One call per seed for the model stages, one call otherwise."""
    seeds = range(ctx.seeds)
    single = {
        "warehouse": stages.run_warehouse,
        "extract": stages.run_extract,
        "features": stages.run_features,
        "baselines": stages.run_baselines,
        "export": stages.run_export,
        "campaign": stages.run_campaign,
        "experiments": stages.run_experiments,
    }
    if stage in single:
        return [lambda: single[stage](ctx)]
    if stage == "evaluation":
        return [lambda s=s: stages.run_evaluation(ctx, s) for s in seeds]
    if stages.takes_all_seeds(stage):
        return [lambda: stages.run_model_stage(stage, ctx, None)]
    return [lambda s=s: stages.run_model_stage(stage, ctx, s) for s in seeds]


def _run_calls(ctx: stages.Context, stage: str) -> tuple[list[dict], stages.Context]:
    """The stage's runs and the context as the stage left it (the paths it wrote): what a child process hands back."""
    return [call() for call in _stage_calls(ctx, stage)], ctx


def run_stage(ctx: stages.Context, stage: str, result: dict, isolated: bool = True) -> stages.Context:
    """Runs one stage (once per seed for the model stages) and files its keys, wall and CPU seconds and peak memory;
    returns the context with the stage's outputs. `isolated`: in a fresh process of its own (components/isolation.py),
    as the pipeline runs it in its own container, so its peak memory is its own and not the earlier stages' too."""
    try:
        with resources.StageMeter() as usage:
            runs, ctx = in_fresh_process(_run_calls, ctx, stage) if isolated else _run_calls(ctx, stage)
    except stages.StageSkipped as skipped:
        log(f"{stage}: skipped ({skipped})")
        result["skipped"].append({"stage": stage, "reason": str(skipped)})
        return ctx
    except Exception as error:  # noqa: BLE001 (a crash in one stage must not lose the others' figures)
        log(f"{stage}: FAILED\n{traceback.format_exc()}")
        result["failed"].append({"stage": stage, "error": f"{type(error).__name__}: {error}"})
        return ctx
    result["timing"]["stages"][stage] = round(usage.wall_s, 3)
    result["timing"].setdefault("cpu_s", {})[stage] = round(usage.cpu_s, 3)
    result["timing"].setdefault("peak_rss_mb", {})[stage] = round(usage.peak_rss_mb, 1)
    aggregate.deep_update(result, aggregate.merge_seeds(runs))
    log(f"{stage}: done in {usage.wall_s:.1f}s ({usage.cpu_s:.1f} CPU s, peak {usage.peak_rss_mb:.0f} MiB)")
    return ctx


def run_bench(
    data: str,
    data_format: str,
    seeds: int,
    work: Path,
    only: tuple[str, ...] = ALL_STAGES,
    ablations: tuple[str, ...] = (),
    split: dict | None = None,
    parameters: dict | None = None,
    isolated: bool = True,
) -> dict:
    """The whole bench on one data set: every stage of `only` in DAG order; returns the bench JSON as a dict.
    `parameters` (typed pipeline parameters, --param) override the preset's own (pipelines/presets.py); `isolated`
    runs each stage in a fresh process (run_stage)."""
    from pipelines import presets

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    stages.warehouse_source(data, data_format)  # bad --data/--format fail before any work
    preset = data if data_format == "synthetic" else ""
    applied = presets.with_preset(preset, parameters or {})
    stages.check_parameters(applied)
    result = {
        "data": data,
        "format": data_format,
        "seeds": seeds,
        "ablations": list(ablations),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": round(os.getloadavg()[0], 2),
        },
        # the pipeline parameters the stages ran with: the preset's (pipelines/presets.py) under --param
        "settings": {
            "preset": preset,
            "parameters": applied,
            "from_preset": presets.parameters(preset),
            "from_params": dict(parameters or {}),
        },
        "timing": {"stages": {}, "cpu_s": {}, "peak_rss_mb": {}},
        "skipped": [],
        "failed": [],
    }
    ctx = stages.Context(
        data=data,
        data_format=data_format,
        seeds=seeds,
        work=work,
        ablations=ablations,
        parameters=applied,
        **(split or {}),
    )
    result["split"] = {
        "split": ctx.feature_split,
        "split_cut": ctx.split_cut,
        "split_window_days": ctx.split_window_days,
    }
    started = time.perf_counter()
    for stage in ALL_STAGES:
        if stage in only:
            ctx = run_stage(ctx, stage, result, isolated)
        else:
            result["skipped"].append({"stage": stage, "reason": "not selected (--stages)"})
    result["timing"]["total_s"] = round(time.perf_counter() - started, 3)
    if ctx.notes:
        result["notes"] = ctx.notes
    # the largest stage's process tree (each stage in its own process when isolated), or this process's own peak
    result["peak_rss_mb"] = max([peak_rss_mb(), *result["timing"]["peak_rss_mb"].values()])
    result["machine"]["load_average_at_end"] = round(os.getloadavg()[0], 2)  # shared cores: timings are noisy
    return result


def known_ablations() -> list[str]:
    """The ranking stage's ablation names. They import TensorFlow, which this process never does: its ~0.8 GB would
    sit under every stage's process tree (run_stage)."""
    from components.ranking.bench import ABLATIONS

    return sorted(ABLATIONS)


def main(argv: list[str] | None = None) -> int:
    """`make bench`: parses the options, runs the bench in a work folder and writes the JSON; 1 if a stage failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a file (amazon, taobao) or a synthetic preset name")
    parser.add_argument("--format", required=True, choices=stages.FORMATS)
    parser.add_argument("--out", required=True, type=Path, help="the JSON to write")
    parser.add_argument("--seeds", type=int, default=1, help="runs of the model stages, seeds 0..n-1")
    parser.add_argument(
        "--stages",
        default=",".join(ALL_STAGES),
        help="comma-separated subset of the stages, in any order (default: all)",
    )
    parser.add_argument(
        "--ablations", default="", help="comma-separated model ablations to train as well (known: dien_no_aux)"
    )
    parser.add_argument("--work-dir", type=Path, help="keep the intermediate outputs here instead of a temp dir")
    parser.add_argument(
        "--split", default="", choices=("", "leave_last_out", "time"), help="the features' split (default: the data's)"
    )
    parser.add_argument("--split-cut", default="", help="time split: the cut T, ISO time (default: end less 2 windows)")
    parser.add_argument("--split-window-days", type=float, default=1.0, help="time split: valid and test window, days")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter the stages run with (repeatable), over the preset's own (pipelines/presets.py)",
    )
    args = parser.parse_args(argv)
    if (args.split_cut or args.split_window_days != 1.0) and args.split != "time":
        parser.error("--split-cut and --split-window-days need --split time")
    split = {"split": args.split, "split_cut": args.split_cut, "split_window_days": args.split_window_days}
    from pipelines.run import parse_params

    try:
        parameters = parse_params(args.param)
        stages.check_parameters(parameters)
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # stages' progress lines
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    only = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = sorted(set(only) - set(ALL_STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {', '.join(ALL_STAGES)}")
    ablations = tuple(a.strip() for a in args.ablations.split(",") if a.strip())
    known = in_fresh_process(known_ablations) if ablations else []
    unknown = sorted(set(ablations) - set(known))
    if unknown:
        parser.error(f"unknown ablation(s) {unknown}; known: {', '.join(known)}")
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        result = run_bench(args.data, args.format, args.seeds, args.work_dir, only, ablations, split, parameters)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            result = run_bench(args.data, args.format, args.seeds, Path(work), only, ablations, split, parameters)
    write_json(args.out, result)
    log(
        f"wrote {args.out}: total {result['timing']['total_s']}s, peak {result['peak_rss_mb']} MiB, "
        f"skipped {[s['stage'] for s in result['skipped']]}, failed {[f['stage'] for f in result['failed']]}"
    )
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
