"""The features stage's entry: an extract output in, the features output (schema.py's layout) out, headline
counts back. The Beam pipeline itself is in pipeline.py."""

from __future__ import annotations

from components.features import data_checks, pipeline


def run(
    extracted: str,
    features: str,
    max_len: int = 50,
    seed: int = 0,
    ranking_task: str = "auto",
    beam_args: str = "[]",
    max_examples_per_user: int = pipeline.DEFAULT_MAX_EXAMPLES_PER_USER,
    split: str = "leave_last_out",
    split_cut: str = "",
    split_window_days: float = 1.0,
    registry_dir: str = "",
    drift_psi_threshold: float = 0.2,
    drift_js_threshold: float = 0.1,
) -> dict[str, float]:
    """Runs the Beam job (beam_args: a JSON list of Beam options, "[]" = local) and returns stats.json's headline
    counts (events, users, examples per split, drops by reason); the whole stats.json is in `features`."""
    stats = pipeline.run_features(
        extracted,
        features,
        max_len,
        seed,
        ranking_task,
        pipeline.parse_beam_args(beam_args),
        max_examples_per_user=max_examples_per_user,
        split=split,
        split_cut=split_cut,
        split_window_days=split_window_days,
        registry_dir=registry_dir,
        drift_thresholds=data_checks.DriftThresholds(drift_psi_threshold, drift_js_threshold),
    )
    return pipeline.headline_figures(stats)
