"""The extract of a GA4 export: queries/ga4_*.sql over `events_*` on BigQuery, or over the local `ga4_events` table.

Why a branch of its own: the export holds no contract tables, only one nested row per event, so the events (and,
without a catalogue table beside the export, the catalogue) are derived from it (ga4_events.sql, ga4_items.sql);
the contract's own events.sql and event_drops.sql then read the derived events, so the contract's rules and drop
reasons hold as for any warehouse, and what only GA4 leaves out is counted by ga4_drops.sql. The user key is a choice of the warehouse URI (`?user_key=user_pseudo_id`), because it decides
which GA4 column identifies a user before any stage runs. GA4 sets `user_id` only on the events after a sign-in, so
the rows of a `user_pseudo_id` without it take the one user_id that pseudo id carries in the window (stitched):
otherwise a shopper's browsing before the sign-in and the purchase after it would be two users. Impressions are not extracted: GA4 logs which items a
list showed (`view_item_list`, counted), never the probability of showing them, which off-policy evaluation needs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from components.extract import runner
from components.warehouse import engines

TABLE = "ga4_events"  # the name the queries use; BigQueryBackend maps it onto `dataset.events_*`
REQUIRED_COLUMNS = ("event_date", "event_timestamp", "event_name", "event_params", "user_id", "user_pseudo_id", "items")
NO_PROPENSITIES = (
    "not extracted: GA4 logs the items a list showed (view_item_list, view_promotion) but not the "
    "probability of showing them (the propensity), so off-policy evaluation cannot run"
)


def suffix_bounds(params: runner.ExtractParams) -> dict[str, str]:
    """The daily tables a window needs, as `_TABLE_SUFFIX` bounds: a suffix is the property's local day, so one day
    past each UTC bound (a daily run reads three tables, not the history). Open bounds take every daily table and
    no `intraday_` one ('intraday_...' sorts after '99999999')."""
    day = dt.timedelta(days=1)
    return {
        "suffix_start": (params.window_start - day).strftime("%Y%m%d") if params.window_start else "00000000",
        "suffix_end": (params.window_end + day).strftime("%Y%m%d") if params.window_end else "99999999",
    }


def is_ga4(backend: engines.Backend) -> bool:
    """A warehouse without a contract `events` table whose dataset holds GA4 daily tables."""
    return backend.columns("events") is None and backend.columns(TABLE) is not None


def check_columns(backend: engines.Backend) -> None:
    present = backend.columns(TABLE) or set()
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        what = (
            "; without `items` the export names no product, so there is nothing to recommend "
            "(is ecommerce tracking on?)"
            if "items" in missing
            else ""
        )
        raise runner.ExtractError(f"GA4 table {backend.tables[TABLE]} lacks column(s) {missing}{what}")


def drop_counts(backend: engines.Backend, run: runner.QueryRun) -> dict[str, dict[str, int]]:
    """{"rows", "items", "noted"}: reason -> n; a dropped event name counts in "rows" as `event_name:<name>`."""
    counts: dict[str, dict[str, int]] = {"rows": {}, "items": {}, "noted": {}}
    for batch in backend.batches(run.sql, run.params):
        for kind, reason, n in zip(*(batch.column(c).to_pylist() for c in ("kind", "reason", "n"))):
            if kind == "event_names":
                kind, reason = "rows", f"event_name:{reason}"
            if n:
                counts[kind][reason] = counts[kind].get(reason, 0) + int(n)
    return {kind: dict(sorted(values.items())) for kind, values in counts.items()}


def extract_into(backend: engines.Backend, params: runner.ExtractParams, out: Path, user_key: str | None) -> dict:
    """events.parquet and items.parquet from the export; returns the manifest without source and dialect.

    The events are the contract queries (events.sql, event_drops.sql) over the export's derived events
    (ga4_events.sql), so the contract's rules and drop reasons (future_event, duplicate_row, ...) are the same as for
    any warehouse. The catalogue is a contract `items` table beside the export when there is one (its rows checked
    and counted as items.sql and item_drops.sql do), else derived from the export (ga4_items.sql)."""
    check_columns(backend)
    values = {**suffix_bounds(params), "user_key": user_key or "user_id"}
    catalogue = runner.check_columns(backend, "items")
    relations = {"events": "ga4_events"} | ({} if catalogue else {"items": "ga4_items"})

    def prepare(name: str, relations: dict[str, str] | None = None) -> runner.QueryRun:
        return runner.prepare(name, backend, params, relations, values)

    if hasattr(backend, "derive"):  # DuckDB: derive the export's events (and catalogue) once for all queries below
        for table, query in relations.items():
            run = prepare(query)
            backend.tables[table] = backend.derive(table, run.sql, run.params)
        relations = {}
    runs = {"events": prepare("events", relations), "items": prepare("items", relations)}
    counts = drop_counts(backend, prepare("ga4_drops"))
    dropped = {"events": runner.drop_counts(backend, prepare("event_drops", relations))}
    if catalogue:
        dropped["items"] = runner.drop_counts(backend, prepare("item_drops"))
    scanned = counts["rows"].pop("scanned", 0)
    rows: dict[str, int] = {}
    rows["events"], rows["users"] = runner.write_parquet(backend, runs["events"], "events", out / "events.parquet")
    if rows["events"] == 0:
        names = {r[len("event_name:") :]: n for r, n in counts["rows"].items() if r.startswith("event_name:")}
        top = ", ".join(f"{name} {n}" for name, n in sorted(names.items(), key=lambda kv: -kv[1])[:5])
        raise runner.ExtractError(
            f"no ecommerce events to extract from {backend.tables[TABLE]} in window [{params.window_start}, "
            f"{params.window_end}): {scanned} export row(s) there"
            + (f", by event name: {top}" if top else "")
            + f"; dropped rows {counts['rows']}, items {counts['items']}, events {dropped['events']}. The pipeline "
            "needs view_item, add_to_cart, add_to_wishlist or purchase events with items (GA4 ecommerce tracking)"
        )
    rows["items"], _ = runner.write_parquet(backend, runs["items"], "items", out / "items.parquet")
    return {
        "window_start": params.window_start.isoformat() if params.window_start else "",
        "window_end": params.window_end.isoformat() if params.window_end else "",
        "event_types": params.event_types,
        "min_events_per_user": params.min_events_per_user,
        "run_time": params.run_time.isoformat(),
        "rows": rows,
        "query_sha256": {run.name: run.sha256 for run in runs.values()},
        "dropped": {**dropped, "ga4_rows": counts["rows"], "ga4_items": counts["items"]},
        "ga4": {
            "table": backend.tables[TABLE],
            "catalogue": backend.tables["items"] if catalogue else "derived from the export's items (ga4_items.sql)",
            "user_key": values["user_key"],
            "rows_scanned": scanned,
            "kept_rows_sharing_user_timestamp": counts["noted"].get("same_user_timestamp", 0),
            "kept_rows_stitched_to_user_id": counts["noted"].get("stitched", 0),
            "kept_rows_of_pseudo_ids_with_several_user_ids": counts["noted"].get("several_user_ids", 0),
            "list_impressions": counts["noted"].get("list_items", 0),
            "impressions": NO_PROPENSITIES,
        },
    }
