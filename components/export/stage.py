"""The export stage's entry: every user's top-K through the funnel, similar items and the campaign tables, written
to the destination in one day's partition; then the model becomes the last blessed one. The work is in export.py."""

from __future__ import annotations

from components import ab, schema
from components.export import export
from components.features.pipeline import parse_beam_args
from components.run_time import of_run
from components.run_time import resolve as resolve_run_time


def run(
    features: str,
    retrieval_model: str,
    ranking_model: str,
    recommendations: str,
    *,
    destination: str,
    top_k: int,
    candidates_n: int,
    experiment: str,
    treatment_ratio: float,
    model_version: str,
    run_id: str,
    run_time: str = "",
    similar_k: int = 20,
    evaluation_summary: str | None = None,
    registry_dir: str = "",
    extracted: str | None = None,
    campaign_outputs: str = "",
    audience_targets: str = "",
    audience_size: int = 1000,
    job_create_time: str = "",
    user_scoring: str = "in_process",
    beam_args: str = "[]",
) -> dict[str, float]:
    """The export stage's entry: artifact paths and parameters in, the lists written, figures out (the manifest is
    in `recommendations`).

    The evaluation summary (optional) supplies what the parameters leave open: the retrieval depth
    (`export_n`, when candidates_n is 0), the model version, the last blessed model for the control arm, and the
    version it registered, which becomes the last blessed one in `registry_dir` once the lists are written.
    The run's time (run_time, else job_create_time, the pipeline job's: components.run_time.of_run; neither = now)
    fixes generated_at, so a retry of the run replaces its own partition. `user_scoring` "beam" scores the users in
    shards on Beam with `beam_args` (the features stage's JSON list: Dataflow in production; "[]" two local workers).
    """
    summary = schema.EvaluationSummary.read(evaluation_summary) if evaluation_summary else None
    if candidates_n <= 0:
        candidates_n = (summary.export_n if summary else 0) or export.DEFAULT_CANDIDATES_N
    previous = summary.previous_blessed if summary else None
    params = export.ExportParams(
        top_k=top_k,
        candidates_n=candidates_n,
        experiment=experiment,
        treatment_ratio=treatment_ratio,
        model_version=model_version or (summary.model_version if summary else "") or run_id,
        run_id=run_id,
        generated_at=resolve_run_time(of_run(run_time, job_create_time)),
        similar_k=similar_k,
        campaign_outputs=export.parse_campaign_outputs(campaign_outputs),
        audience_targets=audience_targets,
        audience_size=audience_size,
        user_scoring=user_scoring,
        beam_args=tuple(parse_beam_args(beam_args)),
    )
    manifest = export.run_export(
        features,
        retrieval_model,
        ranking_model,
        destination,
        recommendations,
        params,
        blessed_retrieval_dir=previous.retrieval_dir if previous else None,
        blessed_ranking_dir=previous.ranking_dir if previous else None,
        blessed_model_version=previous.version if previous else "",
        registry_dir=registry_dir or None,
        registered_version=summary.registered.version if summary and summary.registered else "",
        extracted_dir=extracted,
    )
    return {
        "users": manifest["users"],
        "recommendation_rows": manifest["rows"]["recommendations"],
        "similar_item_rows": manifest["rows"]["similar_items"],
        "fallback_users": manifest["fallback_users"],
        "treatment_users": manifest["variants"][ab.TREATMENT],
        "candidates_n": manifest["candidates_n"],
        "users_per_s": manifest["timing"]["users_per_s"],
        **{f"{name}_rows": manifest["rows"][name] for name in manifest.get("campaign_outputs", [])},
    }
