"""Pipeline entry points of the experiments: A/B analysis, off-policy evaluation and the bandit re-ranker stage.

Each writes its artifact directory through a temporary sibling and a rename, so a failed run leaves nothing that
looks complete, and logs its figures as KFP metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components import atomic, schema
from components.experiments import ab_analysis, ope, rewards, studies
from components.experiments.bandit import BayesianLinearBandit, reranker_features
from components.experiments.bayesian_fm import BayesianFM
from components.experiments.histories import lookup, user_behaviour, user_histories
from components.extract import runner
from components.serving import funnel
from components.warehouse import engines

FEEDBACK_CHUNK = 50_000
FM_FILE = "fm_posterior.npz"
FM_FIELDS = ("user", "item", "item_category", "hour_of_day")  # the logged impression's time: its UTC hour


def _write_skipped(output_dir: str, reason: str) -> None:
    with atomic.staged_directory(output_dir) as staging:
        (staging / "skipped.json").write_text(json.dumps({"skipped": reason}))


def _ab_skip_reason(warehouse_uri: str, treatment_ratio: float) -> str:
    if not 0.0 < treatment_ratio < 1.0:
        return f"treatment_ratio {treatment_ratio} puts every user in one arm: no A/B comparison"
    if ab_analysis.impression_count(warehouse_uri) == 0:
        return "the warehouse has no impressions (public data): no A/B outcomes"
    return ""


def run_ab_analysis(
    warehouse_uri: str,
    analysis: str,
    experiment: str = "ranker",
    treatment_ratio: float = 0.5,
    assignments_table: str = "",
) -> dict:
    """The A/B analysis task's entry: `analysis`/analysis.json with the per-arm outcomes and tests; figures
    ab_<arm>_ctr/cvr, ab_ctr_p, ab_cvr_p, ab_chi2_p. Without impressions, or with every user in one arm (ratio 0
    or 1), there is nothing to compare: skipped.json says why, and the figures are only that reason."""
    reason = _ab_skip_reason(warehouse_uri, treatment_ratio)
    if reason:
        _write_skipped(analysis, reason)
        return {"skipped": reason}
    result = ab_analysis.analyse(warehouse_uri, experiment, treatment_ratio, assignments_table)
    with atomic.staged_directory(analysis) as staging:
        (staging / "analysis.json").write_text(json.dumps(result, indent=2))
    figures = {
        f"ab_{arm}_{metric}": result[arm][metric]
        for arm in ("control", "treatment")
        for metric in ("ctr", "cvr")
        if result[arm][metric] is not None
    }
    figures.update({f"ab_{key}": result[key] for key in ("ctr_p", "cvr_p", "chi2_p") if result[key] is not None})
    return figures


def logged_click_rate(warehouse_uri: str) -> dict:
    """The logging policy's observed click rate per shown slot: what the new ranker's off-policy estimate (the
    same per-slot estimand) is compared with. Counted over the rows extract's impressions query keeps (valid
    propensities at or above schema.MIN_PROPENSITY, known items, complete fields), the rows the estimators may
    use, not over every raw row of the table."""
    backend = engines.open_backend(ab_analysis.warehouse_uri(warehouse_uri))
    try:
        query = runner.prepare("impressions", backend, runner.ExtractParams.parse("", "", "", 1))
        impressions = clicks = 0
        for batch in backend.batches(query.sql, query.params):
            impressions += batch.num_rows
            clicks += int(pc.sum(batch.column("clicked").cast(pa.int64())).as_py() or 0)
    finally:
        backend.close()
    if impressions == 0:
        raise ValueError(f"{warehouse_uri}: the impressions table is empty, so there is no logged click rate")
    return {"impressions": impressions, "clicks": clicks, "click_rate": clicks / impressions}


def run_off_policy_evaluation(
    warehouse_uri: str,
    shop_preset: str,
    report: str,
    shop_seed: int = 0,
    repeats: int = 5,
    requests_per_log: int = 20_000,
    epsilon: float = 0.1,
    bandit_rounds: int = 120,
    features: str | None = None,
    ranking_model: str | None = None,
    reward_weighting: str = "click",
    bandit_study: bool = True,
    bandit_batch: int = 256,
    shift_fraction: float = 0.5,
) -> dict:
    """OPE estimates beside the truth (and the bandit curves, unless bandit_study is false: then ope.json's bandit
    says it was skipped) on the synthetic shop that built the warehouse.
    The bandits learn `reward_weighting` (rewards.parse); with one other than click-only, ope.weighted holds the
    OPE study of that reward beside the click rate's. Each of the `bandit_rounds` rounds serves `bandit_batch`
    requests, and `shift_fraction` of the users shift interest at a third of the rounds (the pipeline's task keeps
    256 and 0.5; the bench's tests ask for smaller studies).

    Writes ope.json ({ab, ope, bandit, logged}: `logged` is the logging policy's observed click rate),
    ope_estimates.png and bandit_curves.png into `report`; the evaluation stage reads this directory into its
    report and (optionally) its gate. Figures: ope_truth, ope_logged_click_rate, ope_<estimator>_{estimate,bias,rmse}
    and bandit_<policy>_cumulative_{reward,score}. A warehouse without impressions gets a `skipped.json` saying so,
    and the figures are only that reason."""
    if ab_analysis.impression_count(warehouse_uri) == 0:
        reason = (
            "the warehouse has no impressions (public data; a GA4 export logs no propensities): "
            "no off-policy evaluation"
        )
    elif not shop_preset:
        reason = "no shop_preset: the true value needs the synthetic shop's world, so no off-policy evaluation"
    else:
        reason = ""
    if reason:
        _write_skipped(report, reason)
        return {"skipped": reason}
    result, run = studies.run_studies(
        warehouse_uri,
        shop_preset,
        shop_seed,
        repeats,
        requests_per_log,
        epsilon,
        bandit_rounds,
        bandit_batch=bandit_batch,
        shift_fraction=shift_fraction,
        ranking_dir=ranking_model,
        features_dir=features,
        reward=rewards.parse(reward_weighting),
        bandit_seeds=studies.BANDIT_SEEDS if bandit_study else (),
    )
    result["logged"] = logged_click_rate(warehouse_uri)

    with atomic.staged_directory(report) as staging:
        (staging / "ope.json").write_text(json.dumps(result, indent=2))
        studies.write_report(staging, result["ope"], run)
    figures = {"ope_truth": result["ope"]["truth"], "ope_logged_click_rate": result["logged"]["click_rate"]}
    for name in ope.ESTIMATORS:
        for field in ("estimate", "bias", "rmse"):
            figures[f"ope_{name}_{field}"] = result["ope"][name][field]
    for policy, values in result["bandit"].items():
        for key in ("cumulative_reward", "cumulative_score"):
            if isinstance(values, dict) and key in values:
                figures[f"bandit_{policy}_{key}"] = values[key]
    return figures


# ---- the bandit re-ranker stage --------------------------------------------------------------------------------
def mutes_logged(impressions: pd.DataFrame) -> bool:
    """Whether the impressions log a mute for every row: False for a table written before `muted`, or by a logger
    that does not record mutes (no column, or null on every row: its mutes are unknown, not zero); a column logged
    for some rows only is refused (ope.LogError), the rule ope.from_impressions applies (ope.logged_mutes)."""
    if not len(impressions) or "muted" not in impressions:
        return False
    return ope.logged_mutes(pa.array(impressions["muted"], from_pandas=True)) is not None


def _logged_queries(retriever, hist_items, hist_cats, behaviour, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The query of each distinct user among `users` (history rows), encoded once, and each slot's row in it."""
    logged, row = np.unique(users, return_inverse=True)
    if not len(logged):
        return np.zeros((0, retriever.item_embeddings.shape[1]), np.float32), row
    steps = None if behaviour is None else behaviour.take(logged)
    return funnel.retrieval_queries(retriever, hist_items[logged], hist_cats[logged], steps), row


def fit_bandit_from_logs(
    retriever,
    impressions: pd.DataFrame,
    events: pd.DataFrame,
    item_index: dict[str, int],
    max_len: int,
    noise_variance: float,
    prior_precision: float,
    exploration: float,
    weights: rewards.RewardWeights = rewards.CLICK,
    fm: BayesianFM | None = None,
) -> tuple[BayesianLinearBandit, int]:
    """A posterior warm-started from the logged impressions (reward = `weights` of click, mute and plain
    impression; a table that logs no mute, `muted` absent or null on every row, counts none: summary.json's
    mutes_logged says which; one that logs them for some rows only is refused, mutes_logged),
    one batch update per chunk; `fm` (FM_FIELDS) is updated in the same pass, with the rewards mapped into [0, 1].

    The context of a logged slot is reranker_features(query of the user's history, item embedding, retrieval
    score); histories are the users' latest (the extract window's end), an approximation for older requests, so each
    logged user's query is encoded once (9.6M impressions of 346k users at the large preset). With
    the events' event_type and event_ts, the query is encoded with each step's gap and the request gap at the
    log's end (histories.user_behaviour) as the funnel retrieves (funnel.retrieval_queries; a retriever that
    does not read time ignores them)."""
    rows, hist_items, hist_cats = user_histories(events, item_index, retriever.item_category, max_len)
    timed = {"event_type", "event_ts"} <= set(events.columns) and len(events) > 0
    behaviour = user_behaviour(events, item_index, rows, max_len) if timed else None
    dim = 2 * retriever.item_embeddings.shape[1] + 2
    positions = impressions["position"].to_numpy().astype(np.int64)
    bandit = BayesianLinearBandit.create(
        dim, int(positions.max()) + 1 if len(positions) else 1, prior_precision, noise_variance, exploration=exploration
    )
    user_row = lookup(impressions["user_id"], rows, -1)
    known = user_row >= 0
    item = lookup(impressions["item_id"], item_index, schema.OOV_INDEX)
    logged = mutes_logged(impressions)
    clicks = weights.of(
        impressions["clicked"].to_numpy().astype(bool), impressions["muted"].to_numpy().astype(bool) if logged else None
    )
    low = min(weights.impression, weights.click, weights.mute if logged else weights.impression)
    high = max(weights.impression, weights.click, weights.mute if logged else weights.impression)
    hour = (
        pd.to_datetime(impressions["event_ts"], utc=True).dt.hour.to_numpy().astype(np.int64)
        if "event_ts" in impressions and len(impressions)
        else np.zeros(len(impressions), np.int64)
    )
    used = np.nonzero(known)[0]
    queries, query_row = _logged_queries(retriever, hist_items, hist_cats, behaviour, user_row[used])
    for start in range(0, len(used), FEEDBACK_CHUNK):
        chunk = used[start : start + FEEDBACK_CHUNK]
        user = user_row[chunk]
        query = queries[query_row[start : start + FEEDBACK_CHUNK]]
        embedded = retriever.item_embeddings[item[chunk]][:, None, :]
        score = np.einsum("bd,bnd->bn", query, embedded)
        contexts = reranker_features(query, embedded, score)[:, 0, :]
        bandit.update(contexts, positions[chunk], clicks[chunk])
        if fm is not None:
            values = np.stack([user, item[chunk], retriever.item_category[item[chunk]], hour[chunk]], axis=1)
            fm.update(contexts, values, positions[chunk], (clicks[chunk] - low) / max(high - low, 1e-12))
    return bandit, len(used)


def run_bandit_reranker(
    features: str,
    extracted: str,
    retrieval_model: str,
    bandit_model: str,
    noise_variance: float = 0.25,
    prior_precision: float = 1.0,
    exploration: float = 1.0,
    reward_weighting: str = "click",
) -> dict:
    """The bandit re-ranker task's entry: writes the re-ranker's model directory `bandit_model`: posterior.npz, bandit.json,
    saved_model/ (see bandit.py) and the Bayesian FM's posterior fm_posterior.npz (BayesianFM.from_arrays(np.load(...)); fields FM_FIELDS), fitted on the
    extracted impressions; without impressions the prior alone (the stage still yields a servable model)."""
    from components.retrieval.model_io import load_retriever

    retriever = load_retriever(retrieval_model)
    spec = schema.FeatureSpec.read(features)
    item_index = {
        item: i + schema.NUM_RESERVED for i, item in enumerate(schema.read_vocab(features, schema.ITEM_VOCAB))
    }
    impressions_path = Path(extracted, "impressions.parquet")
    impressions = (
        pq.read_table(impressions_path).to_pandas()
        if impressions_path.exists()
        else pd.DataFrame({c: [] for c in schema.IMPRESSIONS.names})
    )
    events_path = Path(extracted, "events.parquet")
    timed = {"event_type", "event_ts"} <= set(pq.read_schema(events_path).names)
    columns = ["user_id", "item_id", *(["event_type", "event_ts"] if timed else [])]
    events = pq.read_table(events_path, columns=columns).to_pandas()
    weights = rewards.parse(reward_weighting)
    dim = 2 * retriever.item_embeddings.shape[1] + 2
    positions = int(impressions["position"].max()) + 1 if len(impressions) else 1
    fm = BayesianFM.create(dim, len(FM_FIELDS), positions, prior_precision=prior_precision)
    bandit, rows = fit_bandit_from_logs(
        retriever,
        impressions,
        events,
        item_index,
        spec.max_len,
        noise_variance,
        prior_precision,
        exploration,
        weights,
        fm,
    )
    summary = {
        "feedback_rows": rows,
        "reward_weighting": weights.spec(),
        "mutes_logged": mutes_logged(impressions),
        "impressions": len(impressions),
        "context_dim": bandit.context_dim,
        "num_positions": bandit.num_positions,
    }
    summary["fm"] = {"file": FM_FILE, "fields": list(FM_FIELDS), "factor_dim": fm.dim}
    bandit.save(
        bandit_model, extra_files={"summary.json": json.dumps(summary, indent=2)}, extra_arrays={FM_FILE: fm.arrays()}
    )
    return {"bandit_feedback_rows": float(rows)}
