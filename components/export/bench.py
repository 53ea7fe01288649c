"""The bench harness's export entry: the export stage's entry (stage.run) on real artifacts, timed, into a scratch
DuckDB."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from components.export import export, stage


def export_bench(
    features_dir: str | Path,
    retrieval_dir: str | Path,
    ranking_dir: str | Path,
    evaluation_summary: str | Path | None = None,
    *,
    candidates_n: int = 0,
    top_k: int = 20,
) -> dict:
    """{"export": {"users_per_s", ...}}: users_per_s is every user through the full funnel (retrieval,
    masking, ranker, top-K) over scoring time; end_to_end also counts reading, loading and writing.

    The pipeline's entry runs with every user in the treatment arm and no registry; the timings come from the
    manifest it writes. candidates_n 0 takes the evaluation summary's export_n (the depth the pipeline would
    export with), as the entry does.
    """
    with tempfile.TemporaryDirectory(prefix="export-bench-") as scratch:
        stage.run(
            str(features_dir),
            str(retrieval_dir),
            str(ranking_dir),
            str(Path(scratch, "out")),
            destination=f"duckdb://{Path(scratch, 'bench.duckdb')}",
            top_k=top_k,
            candidates_n=candidates_n,
            experiment="bench",
            treatment_ratio=1.0,
            model_version="bench",
            run_id="bench",
            evaluation_summary=str(evaluation_summary) if evaluation_summary else None,
        )
        manifest = json.loads(Path(scratch, "out", export.MANIFEST_FILE).read_text())
    timing = manifest["timing"]
    candidates_n = manifest["candidates_n"]
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
