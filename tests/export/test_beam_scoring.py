"""Export's user scoring on Beam (two local worker processes loading the real TFRS and DIEN artifacts in setup)
writes the in-process export's tables, both A/B arms and the popularity fallback included: the same rows, items and
ranks; DIEN's scores equal up to float32 round-off (a shard feeds the ranker a batch of another size than the
whole arm, and oneDNN's sums then differ in the last bit: 3 of 18 scores by one ulp, 6e-8, on this shop)."""

import dataclasses

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components import ab
from components.export import beam_scoring, export

from .conftest import GENERATED_AT
from .test_real_models import real_models  # noqa: F401 (the module fixture this test shares)


def run(real_models, out, **params):  # noqa: F811 (the fixture's value)
    features, retrieval_dir, ranking_dir = real_models
    settings = export.ExportParams(
        top_k=3,
        candidates_n=6,
        experiment="exp",
        treatment_ratio=0.5,
        model_version="v-real",
        run_id="run-real",
        generated_at=GENERATED_AT,
        similar_k=2,
    )
    manifest = export.run_export(
        features,
        retrieval_dir,
        ranking_dir,
        f"duckdb://{out / 'r.duckdb'}",
        out / "out",
        dataclasses.replace(settings, **params),
        blessed_retrieval_dir=retrieval_dir,
        blessed_ranking_dir=ranking_dir,
        blessed_model_version="v-blessed",
    )
    return manifest, pq.read_table(out / "out" / export.RECOMMENDATIONS_FILE)


def test_beam_export_writes_the_in_process_lists(real_models, tmp_path):  # noqa: F811
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    manifest, expected = run(real_models, tmp_path / "a")
    beam_manifest, got = run(real_models, tmp_path / "b", user_scoring="beam")
    assert got.drop_columns(["score"]).equals(expected.drop_columns(["score"]))
    np.testing.assert_allclose(pc.subtract(got["score"], expected["score"]).to_numpy(), 0.0, atol=1e-6)
    assert {k: v for k, v in beam_manifest.items() if k != "timing"} == {
        k: v for k, v in manifest.items() if k != "timing"
    }
    # both arms and the fallback ran: control rows name the blessed version, u6 (no history) is a fallback
    versions = dict(zip(expected.column("variant").to_pylist(), expected.column("model_version").to_pylist()))
    assert versions == {ab.TREATMENT: "v-real", ab.CONTROL: "v-blessed"}
    assert manifest["fallback_users"] >= 1 and manifest["users"] == 6


def test_every_arm_gets_back_its_own_users_in_order(real_models):  # noqa: F811
    """Shards of one or two users, one arm empty in some shards: score_arms returns each arm's rows as asked."""
    from components.export import batch
    from components.export.inputs import read_serving_inputs
    from components.serving.models import load_serving_model

    features, retrieval_dir, ranking_dir = real_models
    inputs = read_serving_inputs(features)
    model = load_serving_model(retrieval_dir, ranking_dir, "v")
    arms = [np.array([0, 1, 5]), np.array([2, 3, 4])]
    spec = (str(retrieval_dir), str(ranking_dir), "v")
    results = beam_scoring.score_arms(
        inputs,
        [(spec, rows) for rows in arms],
        candidates_n=6,
        top_k=3,
        memory_budget_mb=256.0,
        beam_args=["--runner=FnApiRunner"],
        users_per_shard=1,
    )
    for rows, result in zip(arms, results):
        expected = batch.score_users(model, inputs, rows, candidates_n=6, top_k=3)
        np.testing.assert_array_equal(result.items, expected.items)
        np.testing.assert_allclose(result.scores, expected.scores, atol=1e-6)  # the module docstring says why
        np.testing.assert_array_equal(result.fallback, expected.fallback)


def test_unknown_scoring_mode_is_refused():
    with pytest.raises(ValueError, match="user_scoring 'spark'"):
        export.ExportParams(
            top_k=3,
            candidates_n=6,
            experiment="exp",
            treatment_ratio=0.5,
            model_version="v",
            run_id="r",
            generated_at=GENERATED_AT,
            user_scoring="spark",
        )
