"""The A/B analysis step: outcomes per arm in SQL (queries/ab_outcomes.sql), p-values in Python.

The SQL is written once in BigQuery's dialect and run on DuckDB through the extract stage's renderer (sqlglot),
so the local run and production run the same query. `assignments` (user_id, variant) is the export's
recommendations table in production; locally, when no assignment table is given, every user with impressions
is bucketed with ab.assign_many, exactly as the export does.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from components.experiments import ab, stats
from components.extract import runner
from components.warehouse.duckdb_warehouse import connect, duckdb_path

QUERY = Path(__file__).resolve().parent / "queries" / "ab_outcomes.sql"
ASSIGNMENTS = pa.schema([pa.field("user_id", pa.string(), nullable=False), pa.field("variant", pa.string(), nullable=False)])
DEFAULT_EXPERIMENT = "ranker-ab"
COUNTS = ("users", "requests", "impressions", "clicks", "purchases")
RATES = ("ctr", "ctr_low", "ctr_high", "cvr", "cvr_low", "cvr_high")


def impression_count(warehouse_path: str | Path) -> int:
    """Rows of the warehouse's impressions table; 0 when it has none (public data sets)."""
    con = connect(duckdb_path(str(warehouse_path)))
    try:
        present = con.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'impressions'").fetchone()[0]
        return con.execute("SELECT COUNT(*) FROM impressions").fetchone()[0] if present else 0
    finally:
        con.close()


def outcomes(con, treatment_ratio: float, confidence: float = 0.95, impressions_table: str = "impressions",
             assignments_table: str = "assignments") -> dict:
    """Runs the analysis SQL on a DuckDB connection where both tables resolve; returns the per-arm figures and
    the comparison with p-values."""
    if not 0.0 < treatment_ratio < 1.0:
        raise ValueError(f"treatment_ratio must be in (0, 1) for an A/B comparison, got {treatment_ratio}")
    source = QUERY.read_text()
    sql = runner.render(source, {"impressions": impressions_table, "assignments": assignments_table}, "duckdb")
    values = {"z": stats.normal_quantile(0.5 + confidence / 2), "treatment_ratio": float(treatment_ratio)}
    rows = con.execute(sql, {name: values[name] for name in runner.query_parameters(source)}).fetch_arrow_table().to_pylist()
    arms = {row["variant"]: row for row in rows}
    if set(arms) != set(ab.VARIANTS):
        raise ValueError(f"need impressions in both arms {ab.VARIANTS}, found {sorted(arms)}")
    first = rows[0]
    per_arm = {name: {**{key: int(row[key]) for key in COUNTS}, **{key: _float(row[key]) for key in RATES}}
               for name, row in arms.items()}
    return {
        **per_arm,
        "ctr_diff": first["ctr_diff"], "ctr_z": first["ctr_z"], "ctr_p": two_sided_p(first["ctr_z"]),
        "cvr_diff": first["cvr_diff"], "cvr_z": first["cvr_z"], "cvr_p": two_sided_p(first["cvr_z"]),
        "chi2": first["srm_chi2"], "chi2_p": stats.chi2_sf(first["srm_chi2"], 1),
        "treatment_ratio": treatment_ratio, "confidence": confidence,
    }


def two_sided_p(z: float | None) -> float | None:
    return None if z is None else 2.0 * stats.normal_sf(abs(z))


def _float(value) -> float | None:
    return None if value is None else float(value)


def analyse_warehouse(warehouse: str | Path, experiment: str = DEFAULT_EXPERIMENT, treatment_ratio: float = 0.5,
                      assignments: pa.Table | None = None, confidence: float = 0.95) -> dict:
    """outcomes() on a local DuckDB warehouse; users are bucketed by ab.assign_many unless `assignments` is given."""
    con = connect(duckdb_path(str(warehouse)))
    try:
        if assignments is None:
            users = [row[0] for row in con.execute("SELECT DISTINCT user_id FROM impressions ORDER BY user_id").fetchall()]
            if not users:
                raise ValueError(f"{warehouse}: the impressions table is empty")
            assignments = pa.table({"user_id": users, "variant": ab.assign_many(users, experiment, treatment_ratio).tolist()},
                                   schema=ASSIGNMENTS)
        con.register("assignments", assignments.select(ASSIGNMENTS.names).cast(ASSIGNMENTS))
        result = outcomes(con, treatment_ratio, confidence)
        result["experiment"] = experiment
        return result
    finally:
        con.close()
