"""Data checks against the last blessed run: the extract's statistics, their drift, and schema changes.

Each run describes its extract (`extract_statistics`: row counts, nulls by column, the extract's drops by reason,
event-type mix, users, items, new-item share, category mix, history-length and item-popularity distributions) and
compares it (`compare`) with the statistics stored beside the last blessed model in the registry (evaluation puts
them in the model's metadata under DATA_STATS). The features stage runs the checks before any training:

- an empty table, or a column whose presence or type differs from the blessed run's, fails the run (SchemaError
  naming the table and column);
- a distribution whose population stability index or Jensen-Shannon distance exceeds its threshold is drift: a
  warning in data_checks.json, which evaluation puts in the report and, with gate_on_drift, in the gate.

PSI = sum (p - q) ln(p / q) over the bins (both smoothed by EPSILON, so a bin empty on one side is finite); the
Jensen-Shannon distance is the square root of the JS divergence in bits, in [0, 1]. Distributions are compared on
the union of their bins, so a renamed category is mass moved to a bin the reference never had.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components import schema

STATS_FILE = "data_stats.json"
CHECKS_FILE = "data_checks.json"
DATA_STATS = "data_stats"  # key of the statistics in a blessed model's registry metadata
EPSILON = 1e-4
DISTRIBUTIONS = ("event_types", "categories", "history_length", "item_popularity")
_TABLES = {"events": schema.EVENTS, "items": schema.ITEMS, "impressions": schema.IMPRESSIONS}


@dataclasses.dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.2  # the usual "significant shift" level of the population stability index
    js: float = 0.1  # Jensen-Shannon distance (base 2)

    def __post_init__(self):
        if self.psi <= 0 or not 0 < self.js <= 1:
            raise ValueError(f"drift thresholds must be psi > 0 and 0 < js <= 1, got psi {self.psi}, js {self.js}")


def _log2_histogram(counts: np.ndarray) -> dict[str, int]:
    """Counts per power-of-two bin: "1" = [1, 2), "2" = [2, 4), ... (the bin's lower edge)."""
    counts = counts[counts > 0]
    if not len(counts):
        return {}
    bins = np.floor(np.log2(counts)).astype(np.int64)
    values, n = np.unique(bins, return_counts=True)
    return {str(2 ** int(v)): int(k) for v, k in zip(values, n)}


def _value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(column)
    return {str(v): int(n) for v, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())}


def extract_statistics(extracted_dir: str | Path) -> dict:
    """The statistics of one extract output (events.parquet, items.parquet, manifest.json)."""
    extracted_dir = Path(extracted_dir)
    manifest = json.loads((extracted_dir / "manifest.json").read_text())
    tables = {
        name: extracted_dir / f"{name}.parquet" for name in _TABLES if (extracted_dir / f"{name}.parquet").exists()
    }
    stats: dict = {"schema": {}, "rows": {}, "nulls": {}}
    for name, path in tables.items():
        arrow_schema = pq.read_schema(path)
        stats["schema"][name] = {field.name: str(field.type) for field in arrow_schema}
        metadata = pq.read_metadata(path)
        stats["rows"][name] = metadata.num_rows
    events = _read(tables, "events", ["user_id", "item_id", "event_type"], stats["schema"])
    items = _read(tables, "items", ["item_id", "category", "available"], stats["schema"], ["brand", "price", "title"])
    for name, table in (("events", events), ("items", items)):
        stats["nulls"][name] = {c: table.column(c).null_count for c in table.column_names if table.column(c).null_count}
    stats["dropped"] = manifest.get("dropped", {})
    stats["window"] = {k: manifest.get(k, "") for k in ("window_start", "window_end", "run_time")}
    user_events = events.group_by("user_id").aggregate([("item_id", "count")]).column("item_id_count")
    item_events = events.group_by("item_id").aggregate([("user_id", "count")])
    stats["rows"]["users"] = len(user_events)
    stats["rows"]["items_with_events"] = item_events.num_rows
    catalogue = set(items.column("item_id").to_pylist())
    with_events = set(item_events.column("item_id").to_pylist())
    available = pc.sum(items.column("available").cast(pa.int64())).as_py() or 0
    stats["new_item_share"] = round(len(catalogue - with_events) / max(len(catalogue), 1), 6)
    stats["available_share"] = round(available / max(items.num_rows, 1), 6)
    stats["event_types"] = _value_counts(events.column("event_type"))
    category_of = dict(zip(items.column("item_id").to_pylist(), items.column("category").to_pylist()))
    item_counts = dict(zip(item_events.column("item_id").to_pylist(), item_events.column("user_id_count").to_pylist()))
    categories: dict[str, int] = {}
    for item, n in item_counts.items():
        category = category_of.get(item, "[not in catalogue]")
        categories[category] = categories.get(category, 0) + int(n)
    stats["categories"] = categories
    stats["history_length"] = _log2_histogram(user_events.to_numpy())
    stats["item_popularity"] = _log2_histogram(np.array(list(item_counts.values()), np.int64))
    return stats


def _read(tables: dict, name: str, required: list[str], schemas: dict, optional: tuple | list = ()) -> pa.Table:
    if name not in tables:
        raise schema.SchemaError(f"data check: table {name!r} is missing from the extract")
    missing = [c for c in required if c not in schemas[name]]
    if missing:
        raise schema.SchemaError(f"data check: table {name!r} has no column {missing[0]!r}")
    return pq.read_table(tables[name], columns=required + [c for c in optional if c in schemas[name]])


def _distribution(counts: dict[str, int], bins: list[str]) -> np.ndarray:
    values = np.array([counts.get(b, 0) for b in bins], np.float64)
    total = values.sum()
    p = values / total if total > 0 else np.full(len(bins), 1.0 / max(len(bins), 1))
    p = p + EPSILON
    return p / p.sum()


def psi(current: dict[str, int], reference: dict[str, int]) -> float:
    """Population stability index of two histograms over the union of their bins (empty bins smoothed); 0 = same."""
    bins = sorted(set(current) | set(reference))
    if not bins:
        return 0.0
    p, q = _distribution(current, bins), _distribution(reference, bins)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(current: dict[str, int], reference: dict[str, int]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two histograms over the union of their bins; 0 = same."""
    bins = sorted(set(current) | set(reference))
    if not bins:
        return 0.0
    p, q = _distribution(current, bins), _distribution(reference, bins)
    m = (p + q) / 2
    divergence = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    return float(math.sqrt(max(divergence, 0.0)))


def check_tables(current: dict, reference: dict | None = None) -> None:
    """Fails on an empty events or items table, and on a column that the blessed run's tables had and this one's
    lack, has with another type, or has new (a column the contract added later, schema.LATER_COLUMNS, is no change:
    the blessed run's extract predates it)."""
    for table in ("events", "items"):
        if current["rows"].get(table, 0) == 0:
            raise schema.SchemaError(f"data check: table {table!r} is empty")
    if not reference:
        return
    for table, columns in reference.get("schema", {}).items():
        now = current["schema"].get(table)
        if now is None:
            if table in ("events", "items"):
                raise schema.SchemaError(f"data check: table {table!r} is missing (the last blessed run had it)")
            continue
        for column, kind in columns.items():
            if column not in now:
                raise schema.SchemaError(
                    f"data check: table {table!r} lost column {column!r} ({kind} in the last blessed run)"
                )
            if now[column] != kind:
                raise schema.SchemaError(
                    f"data check: table {table!r} column {column!r} is {now[column]}, was {kind} in the last blessed run"
                )
        for column in sorted(set(now) - set(columns) - set(schema.LATER_COLUMNS.get(table, ()))):
            raise schema.SchemaError(f"data check: table {table!r} has a new column {column!r} ({now[column]})")


def compare(current: dict, reference: dict | None, thresholds: DriftThresholds | None = None) -> dict:
    """{"reference": bool, "distributions": {name: {psi, js, drift}}, "changes": {...}, "warnings": [...]}."""
    thresholds = thresholds or DriftThresholds()
    out: dict = {"reference": reference is not None, "thresholds": dataclasses.asdict(thresholds), "warnings": []}
    if reference is None:
        out["note"] = "no last blessed run with data statistics: nothing to compare with"
        return out
    out["reference_window"] = reference.get("window", {})
    distributions = {}
    for name in DISTRIBUTIONS:
        value_psi = psi(current.get(name, {}), reference.get(name, {}))
        value_js = js_distance(current.get(name, {}), reference.get(name, {}))
        drift = value_psi > thresholds.psi or value_js > thresholds.js
        distributions[name] = {"psi": round(value_psi, 6), "js": round(value_js, 6), "drift": drift}
        if drift:
            out["warnings"].append(
                f"drift in {name}: PSI {value_psi:.3f} (threshold {thresholds.psi}), JS distance {value_js:.3f} "
                f"(threshold {thresholds.js}) against the last blessed run"
            )
    out["distributions"] = distributions
    out["changes"] = {
        key: {"current": current["rows"].get(key, 0), "reference": reference.get("rows", {}).get(key, 0)}
        for key in ("events", "items", "users", "items_with_events")
    }
    out["changes"]["new_item_share"] = {
        "current": current.get("new_item_share"),
        "reference": reference.get("new_item_share"),
    }
    return out


def reference_statistics(registry_dir: str | Path | None) -> tuple[dict | None, str]:
    """(statistics stored with the last blessed model, its version), or (None, "") without one."""
    if not registry_dir:
        return None, ""
    from components import registry

    blessed = registry.last_blessed(registry_dir)
    if blessed is None:
        return None, ""
    return blessed.metadata.get(DATA_STATS), blessed.version


def run_checks(
    extracted_dir: str | Path, registry_dir: str | Path | None = None, thresholds: DriftThresholds | None = None
) -> tuple[dict, dict]:
    """(statistics, checks): fails (SchemaError) on an empty table or a schema change, else the comparison."""
    current = extract_statistics(extracted_dir)
    reference, version = reference_statistics(registry_dir)
    check_tables(current, reference)
    checks = compare(current, reference, thresholds)
    checks["reference_version"] = version
    return current, checks


def read_checks(features_dir: str | Path) -> dict | None:
    """The data checks the features stage wrote beside its output, for evaluation's report and gate; None without."""
    path = Path(features_dir, CHECKS_FILE)
    return json.loads(path.read_text()) if path.exists() else None


def read_statistics(features_dir: str | Path) -> dict | None:
    """The extract's statistics the features stage wrote, which evaluation registers with a blessed model; None
    without."""
    path = Path(features_dir, STATS_FILE)
    return json.loads(path.read_text()) if path.exists() else None
