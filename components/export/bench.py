"""The bench harness's export entry: the whole export on real artifacts, timed, into a scratch DuckDB."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from components import schema
from components.export.export import DEFAULT_CANDIDATES_N, ExportParams, run_export


def export_bench(
    features_dir: str | Path,
    retrieval_dir: str | Path,
    ranking_dir: str | Path,
    evaluation_summary: str | Path | None = None,
    *,
    candidates_n: int = 0,
    top_k: int = 20,
    memory_budget_mb: float = 256.0,
) -> dict:
    """{"export": {"users_per_s", ...}}: users_per_s is every user through the full funnel (retrieval,
    masking, ranker, top-K) over scoring time; end_to_end also counts reading, loading and writing.

    candidates_n 0 takes the evaluation summary's export_n (the depth the pipeline would export with).
    """
    if candidates_n <= 0:
        export_n = schema.EvaluationSummary.read(evaluation_summary).export_n if evaluation_summary else 0
        candidates_n = export_n or DEFAULT_CANDIDATES_N
    params = ExportParams(
        top_k=top_k,
        candidates_n=candidates_n,
        experiment="bench",
        treatment_ratio=1.0,
        model_version="bench",
        run_id="bench",
        generated_at=dt.datetime.now(dt.timezone.utc),
        memory_budget_mb=memory_budget_mb,
    )
    with tempfile.TemporaryDirectory(prefix="export-bench-") as scratch:
        manifest = run_export(
            features_dir,
            retrieval_dir,
            ranking_dir,
            f"duckdb://{Path(scratch, 'bench.duckdb')}",
            Path(scratch, "out"),
            params,
        )
    timing = manifest["timing"]
    return {
        "export": {
            "users_per_s": timing["users_per_s"],
            "users_per_s_end_to_end": round(manifest["users"] / timing["total_s"], 1),
            "users": manifest["users"],
            "candidates_n": candidates_n,
            "top_k": top_k,
            "score_s": timing["score_s"],
            "users_per_cpu_s": timing["users_per_cpu_s"],
            "total_s": timing["total_s"],
            "stages_s": {k: timing[k] for k in ("read_s", "load_models_s", "score_s", "similar_items_s", "write_s")},
        }
    }
