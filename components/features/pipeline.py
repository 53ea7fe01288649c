"""The features job: extract output (events + items Parquet) -> vocabularies, examples, stats.

Runs locally on Beam's FnApiRunner (the DirectRunner's batch engine, see local_runner) in two worker
processes by default; runner options in `beam_args` pass through unchanged (DataflowRunner included). Paths go through
Beam's FileSystems, so they may be local or gs://; a Vertex AI "/gcs/..." artifact path is read
and written as gs://.
The job writes into a temporary directory beside `output_dir` and renames it when complete, so
a failed run never leaves a directory that looks like a finished output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from components import schema
from components.features import data_checks
from components.features import transforms as T
from components.features.examples import resolve_ranking_task
from components.features.sequences import min_steps, split_fn

log = logging.getLogger(__name__)

EVENTS_FILE = "events.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "manifest.json"
_COUNTS_FILE = "_counts.json"
# Two local worker processes, read by the FnApiRunner that local_runner() builds.
LOCAL_DEFAULTS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
# Far above every user of Amazon Beauty (at most 201 train targets), the Taobao sample (536) and the synthetic
# shops (at most 300 views), so it changes none of them; it bounds what one bot or shared account can weigh.
DEFAULT_MAX_EXAMPLES_PER_USER = 1000


def run_features(
    extracted_dir: str,
    output_dir: str,
    max_len: int = 50,
    seed: int = 0,
    ranking_task: str = "auto",
    beam_args: list[str] | None = None,
    split: str = "leave_last_out",
    max_examples_per_user: int = DEFAULT_MAX_EXAMPLES_PER_USER,
    split_cut: str | None = None,
    split_window_days: float = 1.0,
    registry_dir: str = "",
    drift_thresholds: data_checks.DriftThresholds | None = None,
) -> dict:
    """Builds the features output (layout in components/schema.py) and returns its stats.

    max_examples_per_user caps the train targets of one user (each one retrieval example and its ranking
    rows) at their most recent ones; 0 means no cap. Capped users and targets are counted in stats.json
    under "capped", and a warning says so. split="time" (sequences.TimeSplit) cuts at `split_cut` (ISO time; by
    default the test window is the last `split_window_days` of the extract's window, when the extract names its
    end, else the last whole `split_window_days` ending with the latest event's UTC day); every user with a step in
    a window and one step before it counts there, with or without train events, and the item vocabulary also holds
    the available catalogue items without events (new items, which retrieval scores by their features). Before the job, the extract's
    statistics are checked against the last blessed model's in `registry_dir` (data_checks: a schema change or an
    empty table fails here; drift is written to data_checks.json beside the statistics)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if ranking_task != "auto" and ranking_task not in schema.RANKING_TASKS:
        raise ValueError(f"unknown ranking_task {ranking_task!r}; expected auto or one of {schema.RANKING_TASKS}")
    local_extract = extracted_dir
    extracted_dir, output_dir = beam_path(str(extracted_dir)), beam_path(str(output_dir))
    manifest = read_manifest(extracted_dir)
    events_path = FileSystems.join(extracted_dir, EVENTS_FILE)
    items_path = FileSystems.join(extracted_dir, ITEMS_FILE)
    check_parquet(events_path, schema.EVENTS, "events")
    check_parquet(items_path, schema.ITEMS, "items")
    thresholds = drift_thresholds or data_checks.DriftThresholds()
    data_stats, checks = data_checks.run_checks(local_extract, registry_dir or None, thresholds)
    for warning in checks["warnings"]:
        log.warning("features: data check: %s", warning)
    split_params = _split_params(split, split_cut, split_window_days, events_path, manifest.get("window_end") or "")
    splitter = split_fn(split, max_examples_per_user, **split_params)
    _check_output_free(output_dir)

    work_dir = f"{output_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        options = pipeline_options(beam_args)
        named = options.view_as(StandardOptions).runner
        pipeline = beam.Pipeline(runner=None if named else local_runner(options), options=options)
        _build(
            pipeline,
            events_path,
            items_path,
            work_dir,
            ranking_task,
            max_len,
            seed,
            splitter,
            min_steps(split),
            catalogue_items=split == "time",
        )
        pipeline.run().wait_until_finish()
        window = None
        if split_params:
            cut_us, window_us = split_params["cut_us"], split_params["window_us"]
            window = {
                "cut": _iso(cut_us),
                "window_days": split_window_days,
                "train_end": _iso(cut_us),
                "valid": [_iso(cut_us), _iso(cut_us + window_us)],
                "test": [_iso(cut_us + window_us), _iso(cut_us + 2 * window_us)],
            }
        stats = _finish(
            work_dir,
            manifest,
            ranking_task=ranking_task,
            max_len=max_len,
            seed=seed,
            split=split,
            max_examples_per_user=max_examples_per_user,
            split_window=window,
        )
        T.dump_json(data_stats, FileSystems.join(work_dir, data_checks.STATS_FILE))
        T.dump_json(checks, FileSystems.join(work_dir, data_checks.CHECKS_FILE))
        _publish(work_dir, output_dir)
    except BaseException as err:
        _remove(work_dir)
        damaged = first_damaged_parquet([events_path, items_path]) if isinstance(err, Exception) else None
        if damaged:
            raise schema.SchemaError(damaged) from err
        raise
    log.info("features: %s (all counts in %s)", summary_line(stats), schema.STATS)
    return stats


def summary_line(stats: dict) -> str:
    """The few figures a person watching the run wants; the whole stats dict (1,000 characters and more) is in the
    output's stats file and the task's metrics."""
    examples = stats["examples"][schema.RETRIEVAL_DIR]
    return (
        f"{stats.get('events', 0):,} events of {stats.get('users', 0):,} users on {stats.get('items', 0):,} items; "
        f"retrieval examples train {examples['train']:,} / valid {examples['valid']:,} / test {examples['test']:,}; "
        f"{sum(stats.get('dropped_events', {}).values()):,} events dropped"
    )


_DAY_US = 86_400 * 10**6


def _split_params(split: str, cut: str | None, window_days: float, events_path: str, window_end: str = "") -> dict:
    """split_fn's keyword arguments: none for leave-last-out, the cut and window in microseconds for "time".

    Without a cut, the test window ends where the extract's window does (`window_end`, exclusive), or else at the
    end of the latest event's UTC day."""
    if split != "time":
        return {}
    if window_days <= 0:
        raise ValueError(f"split_window_days must be positive, got {window_days}")
    window_us = round(window_days * _DAY_US)
    if cut:
        try:
            when = dt.datetime.fromisoformat(cut)
        except ValueError as err:
            raise ValueError(f"split_cut {cut!r} is not an ISO date or time") from err
        when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
        return {"cut_us": round(when.timestamp() * 10**6), "window_us": window_us}
    if window_end:
        end = dt.datetime.fromisoformat(window_end)
        end = end if end.tzinfo else end.replace(tzinfo=dt.timezone.utc)
        return {"cut_us": round(end.timestamp() * 10**6) - 2 * window_us, "window_us": window_us}
    with FileSystems.open(events_path) as handle:
        latest = pc.max(pq.read_table(handle, columns=["event_ts"]).column(0)).cast(pa.int64()).as_py()
    end_of_day = (latest // _DAY_US + 1) * _DAY_US
    return {"cut_us": end_of_day - 2 * window_us, "window_us": window_us}


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 10**6, dt.timezone.utc).isoformat()


def beam_path(path: str) -> str:
    """Vertex AI mounts GCS at /gcs/<bucket>; Beam IO (and Dataflow workers) need gs://<bucket>."""
    return "gs://" + path[len("/gcs/") :] if path.startswith("/gcs/") else path


def pipeline_options(beam_args: list[str] | None) -> PipelineOptions:
    """The caller's options unchanged; two local worker processes when no runner is named."""
    args = list(beam_args or [])
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in args):
        args += LOCAL_DEFAULTS
    return PipelineOptions(args)


def local_runner(options: PipelineOptions):
    """The engine Beam 2.77's DirectRunner runs a batch pipeline on, built the way it builds it (the FnApiRunner,
    with the pipeline's options provisioned to the worker processes), without trying Prism first.

    Why not the DirectRunner: it first starts Prism, a binary it downloads from the internet at run time, and
    falls back to this only when that fails. Why not --runner=FnApiRunner: that builds the runner without the
    provision info, so the worker processes start from default options instead of the pipeline's.
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    )


def _build(
    pipeline, events_path, items_path, work_dir, ranking_task, max_len, seed, splitter, min_steps, catalogue_items=False
) -> None:
    catalogue = (
        pipeline
        | "ReadItems" >> ReadFromParquetBatched(items_path, columns=schema.ITEMS.names)
        | "BuildCatalogue" >> T.BuildCatalogue()
    )
    events = pipeline | "ReadEvents" >> ReadFromParquetBatched(events_path, columns=schema.EVENTS.names)
    grouped = events | "GroupEventsByUser" >> T.GroupEventsByUser(catalogue)
    sequences = grouped[T.MAIN] | "BuildSequences" >> T.BuildSequences(min_steps)
    task = grouped[T.STATS] | "ResolveRankingTask" >> T.ResolveRankingTask(ranking_task)
    vocab = sequences[T.MAIN] | "ComputeVocabulary" >> T.ComputeVocabulary(catalogue, splitter, catalogue_items)
    sizes = vocab | "WriteVocabulary" >> T.WriteVocabulary(catalogue, work_dir)
    examples = sequences[T.MAIN] | "BuildExamples" >> T.BuildExamples(
        vocab, task, max_len=max_len, seed=seed, split=splitter
    )
    for kind in (schema.RETRIEVAL_DIR, schema.RANKING_DIR):
        for name in schema.SPLITS:
            tag = T.output_tag(kind, name)
            prefix = FileSystems.join(work_dir, kind, name)
            _ = examples[tag] | f"Write/{tag}" >> T.WriteTFRecordBlocks(prefix)
    _ = (
        (grouped[T.STATS], sequences[T.STATS], examples[T.STATS], sizes)
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> T.SumCounts()
        | "WriteCounts" >> beam.Map(T.dump_json, FileSystems.join(work_dir, _COUNTS_FILE))
    )


def read_manifest(extracted_dir: str) -> dict:
    """The extract's manifest.json through Beam's FileSystems (local or GCS); a folder without one is refused."""
    path = FileSystems.join(extracted_dir, MANIFEST_FILE)
    if not FileSystems.exists(path):
        raise schema.SchemaError(f"{extracted_dir}: no {MANIFEST_FILE}; is this an extract output directory?")
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def check_parquet(path: str, expected, name: str) -> None:
    """Fails fast, from the Parquet footer alone, on a missing file, wrong columns or types,
    no rows, or nulls in required columns (when the writer recorded null counts). Batches are
    validated again inside the pipeline, which catches nulls the footer does not record."""
    if not FileSystems.exists(path):
        raise schema.SchemaError(f"{name}: {path} does not exist")
    try:
        with FileSystems.open(path) as handle:
            parquet = pq.ParquetFile(handle)
            arrow_schema, metadata = parquet.schema_arrow, parquet.metadata
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise schema.SchemaError(f"{name}: {path} is not a readable Parquet file: {err}") from err
    schema.validate_table(arrow_schema.empty_table(), expected, name)
    if metadata.num_rows == 0:
        raise schema.SchemaError(f"{name}: {path} has no rows")
    for field in expected:
        if field.nullable:
            continue
        column = arrow_schema.get_field_index(field.name)
        nulls = 0
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(column).statistics
            if stats is not None and stats.has_null_count:
                nulls += stats.null_count
        if nulls:
            raise schema.SchemaError(f"{name}: column {field.name!r} has {nulls} null value(s)")


def first_damaged_parquet(paths: list[str]) -> str | None:
    """After a failed run: "<path> is damaged: <why>" for the first input whose pages do not decode, else None.

    Beam reports a corrupt page as a worker traceback that names no file; reading each input again,
    page by page, says which one it was."""
    for path in paths:
        try:
            with FileSystems.open(path) as handle:
                for _ in pq.ParquetFile(handle).iter_batches():
                    pass
        except Exception as err:  # noqa: BLE001 (pyarrow raises OSError, ArrowInvalid, ... for a damaged page)
            return f"{path} is damaged: {type(err).__name__}: {err}"
    return None


def _finish(
    work_dir: str,
    manifest: dict,
    *,
    ranking_task: str,
    max_len: int,
    seed: int,
    split: str,
    max_examples_per_user: int,
    split_window: dict | None = None,
) -> dict:
    """Turns the pipeline's summed counts into stats.json (with the time split's cut and window) and
    feature_spec.json."""
    counts_path = FileSystems.join(work_dir, _COUNTS_FILE)
    with FileSystems.open(counts_path) as handle:
        counts = json.loads(handle.read())
    FileSystems.delete([counts_path])
    stats = T.nested(counts)
    for kind in (schema.RETRIEVAL_DIR, schema.RANKING_DIR):
        for name in schema.SPLITS:
            stats.setdefault("examples", {}).setdefault(kind, {}).setdefault(name, 0)
    capped = stats.setdefault("capped", {})
    capped.setdefault("users", 0)
    capped.setdefault("train_targets", 0)
    if capped["users"]:
        log.warning(
            "features: %d user(s) have more than %d train examples; their %d oldest train targets were "
            "left out (max_examples_per_user)",
            capped["users"],
            max_examples_per_user,
            capped["train_targets"],
        )
    check_complete(stats, split)
    stats.update(
        ranking_task=resolve_ranking_task(ranking_task, stats.get("events_by_type", {})),
        max_len=max_len,
        seed=seed,
        split=split,
        max_examples_per_user=max_examples_per_user,
        source=manifest.get("source"),
    )
    if split_window:
        stats["split_window"] = split_window
    spec = schema.FeatureSpec(
        max_len=max_len,
        num_items=stats["items"] + schema.NUM_RESERVED,
        num_categories=stats["categories"] + schema.NUM_RESERVED,
        num_users=stats["users"] + schema.NUM_RESERVED,
        ranking_task=stats["ranking_task"],
        split=split,
        seed=seed,
    )
    T.dump_json(schema.FeaturesManifest.from_json(stats).to_json(), FileSystems.join(work_dir, schema.STATS))
    T.dump_json(spec.to_json(), FileSystems.join(work_dir, schema.FEATURE_SPEC))
    return stats


def check_complete(stats: dict, split: str) -> None:
    """Refuses an output whose example counts contradict the step counts.

    Under leave-last-out every kept user has one test and one valid example and n - 3 train
    examples less those the cap left out, so the counts must be users, users and
    steps - 3 * users - capped. A runner that drops a bundle fails here instead of publishing an
    output that looks whole.
    """
    if split != "leave_last_out":
        return
    users, steps = stats.get("users", 0), stats.get("steps", 0)
    capped = stats.get("capped", {}).get("train_targets", 0)
    expected = {"train": steps - 3 * users - capped, "valid": users, "test": users}
    got = stats["examples"][schema.RETRIEVAL_DIR]
    if got != expected:
        raise RuntimeError(f"incomplete features output: retrieval examples {got}, expected {expected} from the steps")


def _is_local(path: str) -> bool:
    return "://" not in path


def _check_output_free(output_dir: str) -> None:
    """Refuses to overwrite a non-empty output (an empty directory, as KFP may create, is fine)."""
    if _is_local(output_dir):
        if os.path.isdir(output_dir) and os.listdir(output_dir):
            raise FileExistsError(f"{output_dir} exists and is not empty")
    elif FileSystems.match([FileSystems.join(output_dir, "*")])[0].metadata_list:
        raise FileExistsError(f"{output_dir} exists and is not empty")


def _publish(work_dir: str, output_dir: str) -> None:
    """Local: one atomic rename. Object stores have no directory rename, so files are moved one
    by one after the job succeeded; stats.json is moved last and marks a complete output."""
    if _is_local(output_dir):
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)
        os.rename(work_dir, output_dir)
        return
    sources = [m.path for m in FileSystems.match([FileSystems.join(work_dir, "**")])[0].metadata_list]
    sources.sort(key=lambda path: path.endswith(schema.STATS))
    targets = [output_dir.rstrip("/") + path[len(work_dir.rstrip("/")) :] for path in sources]
    for source, target in zip(sources, targets):
        FileSystems.rename([source], [target])
    _remove(work_dir)


def _remove(path: str) -> None:
    if _is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif FileSystems.exists(path):
        FileSystems.delete([path])


def parse_beam_args(beam_args: str) -> list[str]:
    """The component's `beam_args` parameter: a JSON list of strings."""
    try:
        args = json.loads(beam_args or "[]")
    except json.JSONDecodeError as err:
        raise ValueError(f"beam_args must be a JSON list of strings, got {beam_args!r}: {err}") from err
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"beam_args must be a JSON list of strings, got {beam_args!r}")
    return args


def headline_figures(stats: dict) -> dict[str, float]:
    """The headline counts of stats.json, flat (name -> float): what the features task logs as KFP metrics."""
    figures = {name: float(stats[name]) for name in ("events_read", "events", "users", "items", "categories", "steps")}
    for kind, splits in stats["examples"].items():
        for split, n in splits.items():
            figures[f"examples_{kind}_{split}"] = float(n)
    for reason, n in stats.get("dropped_events", {}).items():
        figures[f"dropped_events_{reason}"] = float(n)
    for reason, n in stats.get("dropped_users", {}).items():
        figures[f"dropped_users_{reason}"] = float(n)
    figures["capped_train_targets"] = float(stats["capped"]["train_targets"])
    return figures


def main(argv: list[str] | None = None) -> None:
    """python -m components.features.pipeline EXTRACTED OUTPUT [--max_len N] [--seed S]
    [--ranking_task T] [Beam options...]; unknown options pass through to Beam."""
    import argparse

    parser = argparse.ArgumentParser(description="Build the features output from an extract output.")
    parser.add_argument("extracted")
    parser.add_argument("output")
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranking_task", default="auto")
    parser.add_argument("--max_examples_per_user", type=int, default=DEFAULT_MAX_EXAMPLES_PER_USER)
    parser.add_argument("--split", default="leave_last_out", choices=("leave_last_out", "time"))
    parser.add_argument("--split_cut", default="")
    parser.add_argument("--split_window_days", type=float, default=1.0)
    args, beam_args = parser.parse_known_args(argv)
    stats = run_features(
        args.extracted,
        args.output,
        args.max_len,
        args.seed,
        args.ranking_task,
        beam_args,
        max_examples_per_user=args.max_examples_per_user,
        split=args.split,
        split_cut=args.split_cut,
        split_window_days=args.split_window_days,
    )
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
