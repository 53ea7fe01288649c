"""The A/B analysis step: outcomes per arm in SQL (queries/ab_outcomes.sql), p-values in Python.

The SQL is written once in BigQuery's dialect and runs on BigQuery or, transpiled by the extract stage's
renderer (sqlglot), on DuckDB, so the local run and production run the same query. `assignments`
(user_id, variant) is the export's recommendations table in production; on a local warehouse without one, every
user with impressions is bucketed with ab.assign_many, exactly as the export does.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from components import ab
from components.experiments import stats
from components.warehouse import engines

QUERY = Path(__file__).resolve().parent / "queries" / "ab_outcomes.sql"
ASSIGNMENTS = pa.schema(
    [pa.field("user_id", pa.string(), nullable=False), pa.field("variant", pa.string(), nullable=False)]
)
LOCAL_ASSIGNMENTS = "ab_assignments"
DEFAULT_EXPERIMENT = "ranker"  # the export's default experiment name
COUNTS = ("users", "requests", "impressions", "clicks", "purchases")
RATES = ("ctr", "ctr_low", "ctr_high", "cvr", "cvr_low", "cvr_high")


def warehouse_uri(warehouse: str | Path) -> str:
    """A bare DuckDB path becomes duckdb:///path; URIs pass through."""
    text = str(warehouse)
    return text if "://" in text else f"duckdb://{Path(text).resolve()}"


def impression_count(warehouse: str | Path) -> int:
    """Rows of the warehouse's impressions table; 0 when it has none (public data sets)."""
    backend = engines.open_backend(warehouse_uri(warehouse))
    try:
        if backend.columns("impressions") is None:
            return 0
        sql = engines.render("SELECT COUNT(*) AS n FROM impressions", backend.tables, backend.dialect)
        return int(sum(batch.column("n")[0].as_py() for batch in backend.batches(sql, {}) if batch.num_rows))
    finally:
        backend.close()


def analyse(
    warehouse: str | Path,
    experiment: str = DEFAULT_EXPERIMENT,
    treatment_ratio: float = 0.5,
    assignments_table: str = "",
    confidence: float = 0.95,
    assignments: pa.Table | None = None,
) -> dict:
    """CTR and CVR per arm with intervals, the treatment-minus-control z-tests and the sample-ratio-mismatch
    chi-square (p-value `chi2_p`). Variants come from `assignments_table` (e.g. the export's predictions table),
    else from `assignments`, else (DuckDB only) from bucketing every user with impressions."""
    if not 0.0 < treatment_ratio < 1.0:
        raise ValueError(f"treatment_ratio must be in (0, 1) for an A/B comparison, got {treatment_ratio}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    backend = engines.open_backend(warehouse_uri(warehouse))
    try:
        if backend.columns("impressions") is None:
            raise ValueError(f"{warehouse}: no impressions table, so there are no outcomes to compare")
        tables = {"impressions": backend.tables["impressions"]}
        if assignments_table:
            tables["assignments"] = engines.validate_table_name(assignments_table)
        else:
            tables["assignments"] = _register_local_assignments(backend, experiment, treatment_ratio, assignments)
        source = QUERY.read_text()
        values = {"z": stats.normal_quantile(0.5 + confidence / 2), "treatment_ratio": float(treatment_ratio)}
        sql = engines.render(source, tables, backend.dialect)
        params = {name: values[name] for name in engines.query_parameters(source)}
        rows = [row for batch in backend.batches(sql, params) for row in batch.to_pylist()]
    finally:
        backend.close()
    result = summarise(rows)
    result.update(experiment=experiment, treatment_ratio=treatment_ratio, confidence=confidence)
    return result


def _register_local_assignments(backend, experiment: str, treatment_ratio: float, assignments: pa.Table | None) -> str:
    if not isinstance(backend, engines.DuckDBBackend):
        raise ValueError("on BigQuery pass assignments_table (the export's predictions table with user_id, variant)")
    if assignments is None:
        users = [
            row[0]
            for row in backend.con.execute("SELECT DISTINCT user_id FROM impressions ORDER BY user_id").fetchall()
        ]
        if not users:
            raise ValueError("the impressions table is empty")
        variants = ab.assign_many(users, experiment, treatment_ratio).tolist()
        assignments = pa.table({"user_id": users, "variant": variants}, schema=ASSIGNMENTS)
    backend.con.register(LOCAL_ASSIGNMENTS, assignments.select(ASSIGNMENTS.names).cast(ASSIGNMENTS))
    return LOCAL_ASSIGNMENTS


def summarise(rows: list[dict]) -> dict:
    """Per-arm figures plus the comparison (with two-sided p-values) from the SQL's rows."""
    arms = {row["variant"]: row for row in rows}
    if set(arms) != set(ab.VARIANTS):
        raise ValueError(f"need impressions in both arms {ab.VARIANTS}, found {sorted(arms)}")
    first = rows[0]
    result: dict = {
        name: {**{key: int(row[key]) for key in COUNTS}, **{key: _float(row[key]) for key in RATES}}
        for name, row in arms.items()
    }
    for metric in ("ctr", "cvr"):
        z = _float(first[f"{metric}_z"])
        result.update(
            {
                f"{metric}_diff": _float(first[f"{metric}_diff"]),
                f"{metric}_z": z,
                f"{metric}_p": None if z is None else 2.0 * stats.normal_sf(abs(z)),
            }
        )
    result["chi2"] = float(first["srm_chi2"])
    result["chi2_p"] = stats.chi2_sf(result["chi2"], 1)
    return result


def _float(value) -> float | None:
    return None if value is None else float(value)
