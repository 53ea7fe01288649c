"""The extract stage's entry: the window of a warehouse's contract tables, or of its GA4 export, as Parquet files.

Output directory: events.parquet (sorted by user_id, event_ts, event_seq), items.parquet, impressions.parquet when
the warehouse has that table, and manifest.json, written through atomic.staged_directory (manifest.json last), so a
failed run leaves nothing that looks complete. The queries and their checks are in runner (contract tables) and
ga4 (a GA4 export); the SQL engines in components.warehouse.engines.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from pathlib import Path

from components import atomic
from components.extract import ga4, runner
from components.run_time import of_run
from components.warehouse import engines


def run(
    warehouse_uri: str,
    extracted: str | Path,
    window_start: str | dt.datetime | None = "",
    window_end: str | dt.datetime | None = "",
    event_types: str | Sequence[str] = "",
    min_events_per_user: int = 1,
    backend: engines.Backend | None = None,
    run_time: str | dt.datetime | None = "",
    window_days: float = 0,
    job_create_time: str = "",
) -> dict:
    """Extracts events, items (and impressions) of a warehouse into `extracted` (a new folder); returns the manifest.

    window_days > 0 replaces the fixed window by the last window_days whole UTC days before run_time's day
    (runner.relative_window).

    A warehouse of GA4 export tables instead of contract tables goes through components.extract.ga4.
    run_time is the run's own time, else the pipeline job's creation time (components.run_time.of_run; neither =
    now): an event after it cannot have happened yet and is dropped as `future_event`, whatever the window says."""
    if job_create_time and not isinstance(run_time, dt.datetime):
        run_time = of_run(run_time or "", job_create_time)
    params = runner.ExtractParams.parse(
        window_start, window_end, event_types, min_events_per_user, run_time, window_days
    )
    _, user_key = engines.split_uri(warehouse_uri)
    output_dir = Path(extracted)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise runner.ExtractError(f"output {output_dir} exists and is not an empty directory")
    owned = backend is None
    backend = backend or engines.open_backend(warehouse_uri)
    try:
        if ga4.is_ga4(backend):
            extract = functools.partial(ga4.extract_into, backend, params, user_key=user_key)
        elif user_key is not None:
            raise runner.ExtractError(
                f"{warehouse_uri!r}: user_key applies to GA4 exports only, and this warehouse has "
                f"a contract events table"
            )
        else:
            for table in ("events", "items"):
                if not runner.check_columns(backend, table):
                    raise runner.ExtractError(
                        f"warehouse {warehouse_uri} has no table {backend.tables[table]} "
                        "(nor GA4 export tables events_*)"
                    )
            with_impressions = runner.check_columns(backend, "impressions")
            extract = functools.partial(runner.extract_into, backend, params, with_impressions=with_impressions)
        with atomic.staged_directory(output_dir, last=runner.MANIFEST) as staging:
            manifest = extract(staging)
            manifest = {"source": warehouse_uri, "dialect": backend.dialect, **manifest}
            atomic.write_json(staging / runner.MANIFEST, manifest)
        return manifest
    finally:
        if owned:
            backend.close()
