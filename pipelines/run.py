"""Runs the pipeline: locally through kfp.local (the default), on Vertex AI, or on a KFP host.

`make pipeline-run` calls this. Locally it first loads the synthetic shop (or a public dataset) into
a DuckDB warehouse under the output folder, because a real shop's warehouse exists before the
pipeline does; then every stage runs as a KFP task in a subprocess of this Python.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components import run_time

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a finite number", bool: "true or false"}
# Parameters each target derives from its own flags; a --param for one of them is refused, naming the flag.
DERIVED = {
    "local": {
        "warehouse_uri": "--source/--shop",
        "destination": "--output",
        "registry_uri": "--output",
        "seed": "--seed",
        "shop_preset": "--shop",
    },
    "vertex": {
        "warehouse_uri": "--project (or --warehouse-uri)",
        "destination": "--project",
        "registry_uri": "--bucket",
        "gcp_project": "--project",
        "gcp_region": "--region",
        "beam_args": "--project/--region/--bucket",
        "seed": "--seed",
    },
    "kfp": {"warehouse_uri": "--warehouse-uri", "destination": "--destination", "seed": "--seed"},
}


def parameter_types() -> dict[str, type]:
    """Name -> type of every parameter of the DAG, read from the pipeline function's signature."""
    from pipelines.pipeline import recommender_pipeline

    signature = inspect.signature(recommender_pipeline.pipeline_func)
    return {name: parameter.annotation for name, parameter in signature.parameters.items()}


def parse_params(texts: Iterable[str], target: str = "local") -> dict[str, Any]:
    """`NAME=VALUE` strings as typed pipeline arguments; a name the DAG lacks, a value of the wrong type,
    a name given twice or one the target sets from its own flags is a ValueError that says which."""
    types = parameter_types()
    values: dict[str, Any] = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {text!r} must be NAME=VALUE")
        if name not in types:
            raise ValueError(f"--param {name}: the pipeline has no such parameter; known: {', '.join(sorted(types))}")
        if name in values:
            raise ValueError(f"--param {name} is given twice")
        if name in DERIVED[target]:
            raise ValueError(f"--param {name}: the {target} run sets it from {DERIVED[target][name]}; use that")
        values[name] = _typed(name, raw, types[name])
    if "run_time" in values:
        run_time.parse(values["run_time"])  # fails at the entry, not in the export after training
    return values


def _typed(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
        value = kind(raw)
        if kind is float and not math.isfinite(value):
            raise ValueError(raw)
        return value
    except ValueError:
        raise ValueError(f"--param {name}={raw!r}: {name} takes {_TYPE_NAMES[kind]}") from None


class RunRefused(RuntimeError):
    """The run cannot start as asked (its output folder is in use); nothing was written."""


@contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Holds an exclusive lock on OUTPUT/.lock for the whole run, so a second run into the same folder is
    refused instead of interleaving its registry and table writes. The kernel drops it when the process dies."""
    output.mkdir(parents=True, exist_ok=True)
    with (output / ".lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise RunRefused(
                f"{output} is in use by another run ({lock.read().strip() or 'unknown process'}); "
                "wait for it to finish or choose another output folder"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} since {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
        lock.flush()
        yield


@contextmanager
def local_job_time(value: str) -> Iterator[None]:
    """kfp.local (2.17) resolves no job-time placeholder (it fails on the DAG's job_create_time input): while this
    is open, the creation-time and schedule-time placeholders resolve to `value`, the local run's run_time, as
    Vertex AI or a KFP host resolve them to the job's."""
    from kfp import dsl
    from kfp.local import placeholder_utils

    original = placeholder_utils.resolve_individual_placeholder

    def resolve(element, *args, **kwargs):
        if isinstance(element, str):
            for placeholder in (
                dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
                dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
            ):
                element = element.replace(placeholder, value)
        return original(element, *args, **kwargs)

    placeholder_utils.resolve_individual_placeholder = resolve
    try:
        yield
    finally:
        placeholder_utils.resolve_individual_placeholder = original


def run_local(output: str | Path, source: str, seed: int = 0, verbose: bool = True, **parameters) -> dict:
    """Runs the whole DAG with kfp.local, holding OUTPUT's lock, and returns where its outputs are (only those
    this run wrote; run_output.outputs) and the parameters it set beyond the derived ones (`parameters`: a synthetic
    preset's own, pipelines/presets.py, under the given ones). `verbose=False` is the quiet terminal of
    `make pipeline-run`."""
    output = Path(output).resolve()
    with output_lock(output):
        return _run_local(output, source, seed, parameters, verbose)


def _run_local(output: Path, source: str, seed: int, parameters: dict, verbose: bool) -> dict:
    from kfp import local

    from components.warehouse import sources
    from components.warehouse.duckdb_warehouse import ensure_warehouse
    from pipelines import presets, run_output
    from pipelines.pipeline import recommender_pipeline

    preset = presets.synthetic_preset(source)
    parameters = presets.with_preset(preset, parameters)
    if presets.parameters(preset):
        print(f"{preset} preset: {presets.describe(preset, parameters)}")

    warehouse = output / "warehouse.duckdb"
    counts = ensure_warehouse(source, warehouse, seed=seed)
    if counts is not None:
        print(f"warehouse: loaded {source} into {warehouse}: {counts}")
    pipeline_root = output / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    arguments = {
        "warehouse_uri": sources.parse(source).warehouse_uri(warehouse),
        "destination": f"duckdb://{output / 'recommendations.duckdb'}",
        "registry_uri": str(output / "registry"),
        "seed": seed,
        # The synthetic shop's simulator knows each policy's true value, so off-policy estimates get a ground truth.
        "shop_preset": source.split(":", 1)[1] if source.startswith("synthetic:") else "",
        "run_time": run_time.now_iso(),
        **parameters,
    }
    started = time.perf_counter()
    with run_output.console(pipeline_root, verbose), local_job_time(arguments["run_time"]):
        recommender_pipeline(**arguments)
    run_dir = max(pipeline_root.iterdir(), key=lambda p: p.stat().st_mtime)
    outputs = run_output.outputs(output, run_dir, warehouse, round(time.perf_counter() - started, 1))
    return {**outputs, "run_time": arguments["run_time"], "parameters": parameters}


def check_remote_uris(warehouse_uri: str, destination: str) -> None:
    """The URIs of a Vertex AI or KFP run, checked here by the stages' own parsers (BigQuery names by BigQuery's
    rules, the GA4 `?user_key=` option), so a bad value fails before anything is compiled or submitted, naming
    itself. An empty one is not checked (Vertex derives both from --project)."""
    from components.export.writers import parse_destination
    from components.warehouse.engines import parse_warehouse_uri

    for flag, value, parse in (
        ("--warehouse-uri", warehouse_uri, parse_warehouse_uri),
        ("--destination", destination, parse_destination),
    ):
        if value:
            try:
                parse(value)
            except ValueError as err:
                raise ValueError(f"{flag} {value!r}: {err}") from None


def main() -> None:
    """`make pipeline-run`: parses the run's options and runs, compiles or submits the DAG on the chosen target."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", choices=("local", "vertex", "kfp"), default="local")
    parser.add_argument("--output", default="runs/local", help="local pipeline root and warehouse folder")
    parser.add_argument("--shop", default="default", help="synthetic shop preset (tiny|default|medium|large)")
    parser.add_argument(
        "--source",
        default=None,
        help="warehouse source (components.warehouse.sources), e.g. ga4:<folder>; overrides --shop",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec", default="pipeline.yaml", help="compiled spec for remote targets")
    parser.add_argument("--project")
    parser.add_argument("--region")
    parser.add_argument("--bucket")
    parser.add_argument("--service-account")
    parser.add_argument("--host")
    parser.add_argument(
        "--warehouse-uri",
        default="",
        help="KFP target, or Vertex instead of PROJECT.warehouse: e.g. "
        "bigquery://project.dataset or a GA4 export's bigquery://project.analytics_<property>",
    )
    parser.add_argument("--destination", default="", help="KFP target: e.g. bigquery://project.recommendations")
    parser.add_argument("--schedule", default=None, help="cron, e.g. '0 3 * * *' for a daily Vertex run")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print everything kfp.local and the stages print (default: one line per task start "
        "and end, the stages' progress lines, and a summary)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter, typed by the DAG's signature (repeatable), e.g. gate_on_ope=true",
    )
    args = parser.parse_args()
    try:
        parameters = parse_params(args.param, args.target)
    except ValueError as err:
        parser.error(str(err))

    required = {"vertex": ("project", "region", "bucket"), "kfp": ("host", "warehouse_uri", "destination")}
    missing = [name for name in required.get(args.target, ()) if not getattr(args, name)]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        make = ", ".join(name.upper() + "=" for name in missing)
        parser.error(f"--target {args.target} needs {flags} ({make} in make)")
    if args.target != "local":
        try:
            check_remote_uris(args.warehouse_uri, args.destination)
        except ValueError as err:
            parser.error(str(err))

    if args.target == "local":
        from components.warehouse.duckdb_warehouse import SourceMismatch

        try:
            outputs = run_local(
                args.output, args.source or f"synthetic:{args.shop}", seed=args.seed, verbose=args.verbose, **parameters
            )
        except (RunRefused, SourceMismatch) as err:
            sys.exit(f"pipelines.run: {err}")
        from pipelines.run_output import describe

        print("\n".join(describe(outputs, Path(args.output).resolve())))
        print("outputs: " + json.dumps(outputs, indent=2))
        return

    from pipelines import submit
    from pipelines.compile import compile_pipeline

    spec = compile_pipeline(args.spec)
    if not args.schedule:  # a one-off run's time is now, kept by its retries; one value would freeze a schedule's
        parameters.setdefault("run_time", run_time.now_iso())
    if args.target == "vertex":
        job = submit.submit_vertex(
            spec_path=spec,
            project=args.project,
            region=args.region,
            bucket=args.bucket,
            service_account=args.service_account,
            schedule_cron=args.schedule,
            parameter_values={
                **submit.production_parameters(spec, args.project, args.region, args.bucket),
                **({"warehouse_uri": args.warehouse_uri} if args.warehouse_uri else {}),
                "seed": args.seed,
                **parameters,
            },
        )
    else:
        job = submit.submit_kfp(
            spec_path=spec,
            host=args.host,
            schedule_cron=args.schedule,
            parameter_values={
                "warehouse_uri": args.warehouse_uri,
                "destination": args.destination,
                "seed": args.seed,
                **parameters,
            },
        )
    print(f"submitted: {job}")


if __name__ == "__main__":
    main()
