"""The evaluation stage: scores the candidate funnel, retrieval alone, the baselines and the last
blessed model on today's test split, reads the off-policy estimates of the new ranker's click rate
(when the pipeline ran that stage), decides the blessing, registers a blessed model and writes the
summary (read by export) and the HTML report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from components import atomic, baselines, kfp_metrics, metrics, registry, schema
from components.evaluation import beam_scoring, bootstrap, breakdowns, data, gate, plots, report, scoring
from components.features import data_checks
from components.features.pipeline import parse_beam_args
from components.serving import models


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    candidates_n: int = 200  # retrieval depth of the funnel
    gate: gate.GateConfig = gate.GateConfig()
    export_metric: str = "hit@20"  # export N = smallest N whose funnel metric is within tolerance of N=candidates_n
    export_tolerance: float = 0.01  # relative
    memory_budget_mb: float = 256.0
    model_version: str = ""  # "" = <UTC time>-<hash of both model artifacts>
    bootstrap_resamples: int = bootstrap.DEFAULT_RESAMPLES  # over test users, for the gate metric's intervals
    example_users: int = 5  # example lists shown in the report
    user_scoring: str = "in_process"  # or "beam": the models and baselines score user shards on Beam workers
    beam_args: tuple[str, ...] = ()  # Beam options of that job (the features stage's); () = two local workers
    max_users: int = 0  # test users scored (data.sample_users, a hash of the id); 0 = every one

    def __post_init__(self):
        if self.candidates_n < 20:
            raise ValueError(f"candidates_n must be at least 20 (the top-K of the gate), got {self.candidates_n}")
        if not 0 <= self.export_tolerance < 1:
            raise ValueError(f"export_tolerance must be in [0, 1), got {self.export_tolerance}")
        if self.max_users < 0:
            raise ValueError(f"max_users must be 0 (every test user) or a count, got {self.max_users}")
        beam_scoring.check_mode(self.user_scoring)


@dataclasses.dataclass
class EvaluationResult:
    summary: dict  # JSON-able: the artifact export and the pipeline read
    html: str
    blessed: bool
    export_n: int
    ranker_rows: tuple[np.ndarray, np.ndarray] | None = None  # (labels, probabilities) for ClassificationMetrics


def model_version(retrieval_dir: str | Path, ranking_dir: str | Path, now: dt.datetime | None = None) -> str:
    """<UTC time>-<first 8 hex of a hash over both artifacts' files>: sortable and content-addressed."""
    digest = hashlib.sha256()
    for root in (Path(retrieval_dir), Path(ranking_dir)):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}"


def choose_export_n(
    funnel_by_n: dict[int, metrics.Ranks], metric: str, tolerance: float
) -> tuple[int, dict[int, float]]:
    """The smallest N whose funnel metric is within `tolerance` (relative) of the deepest N."""
    k = int(metric.split("@")[1]) if "@" in metric else 20
    values = {n: metrics.ranking_metrics(ranks, (k,))[metric] for n, ranks in sorted(funnel_by_n.items())}
    deepest = values[max(values)]
    chosen = min(n for n, v in values.items() if v >= deepest * (1 - tolerance))
    return chosen, values


@dataclasses.dataclass
class _Scored:
    """Every model's ranks and lists on today's test split."""

    split: data.TestSplit
    candidate: models.ServingModel
    scores: scoring.ModelScores
    baselines: dict[str, scoring.BaselineScores]
    previous: registry.BlessedModel | None
    previous_model: models.ServingModel | None
    previous_scores: scoring.ModelScores | None
    # rankers trained beside the candidate's (DIN, ...), each in the funnel behind the candidate's retrieval
    comparisons: dict[str, tuple[models.ServingModel, scoring.ModelScores]] = dataclasses.field(default_factory=dict)

    def ranks_by_model(self) -> dict[str, metrics.Ranks]:
        ranks = {
            "funnel": self.scores.funnel,
            "retrieval": self.scores.retrieval,
            **{f"funnel_{name}": scores.funnel for name, (_, scores) in self.comparisons.items()},
            **{name: b.ranks for name, b in self.baselines.items()},
        }
        if self.previous_scores is not None:
            ranks["last_blessed_funnel"] = self.previous_scores.funnel
        return ranks


def evaluate(
    features_dir: str | Path,
    retrieval_dir: str | Path,
    ranking_dir: str | Path,
    registry_dir: str | Path | None = None,
    config: EvaluationConfig = EvaluationConfig(),
    load_models: Callable[..., models.ServingModel] = models.load_serving_model,
    off_policy_dir: str | Path | None = None,
    comparison_rankers: dict[str, str | Path] | None = None,
    extracted_dir: str | Path | None = None,
    candidate_ranker: str = "ranker",
    campaign_path: str | Path | None = None,
) -> EvaluationResult:
    """Everything the stage computes, in memory; `run_evaluation` writes it out.

    `load_models(retrieval_dir, ranking_dir, version)` loads a model pair (tests pass small doubles).
    `off_policy_dir` is the off-policy evaluation stage's output (None: not run). `comparison_rankers`
    {name: ranking artifact} are rankers trained beside the candidate's (`candidate_ranker` names it): each is
    scored in the funnel behind the candidate's retrieval, for the report, never for the gate. `extracted_dir`
    (the extract output) gives the report the source and window. `campaign_path` is the campaign evaluation's
    JSON (complementary items and audiences, components.export.campaign_eval), shown in the report.
    """
    started = time.perf_counter()
    off_policy = data.read_off_policy(off_policy_dir)
    scored = _score_everything(
        features_dir, retrieval_dir, ranking_dir, registry_dir, config, load_models, comparison_rankers or {}
    )
    ranks_by_model = scored.ranks_by_model()
    ranking_metrics = {name: metrics.ranking_metrics(ranks) for name, ranks in ranks_by_model.items()}
    intervals, differences = _gate_intervals(ranks_by_model, config, scored)
    checks = data_checks.read_checks(features_dir)
    decision = gate.decide(
        ranking_metrics["funnel"],
        {b: ranking_metrics[b] for b in scored.baselines},
        ranking_metrics.get("last_blessed_funnel"),
        config.gate,
        off_policy=_gate_evidence(off_policy),
        differences={name: d.to_json() for name, d in differences.items()},
        drift_warnings=(checks or {}).get("warnings"),
    )
    export_n, by_n = choose_export_n(scored.scores.funnel_by_n, config.export_metric, config.export_tolerance)
    rankers = {candidate_ranker: _ranker_metrics(scored.candidate.ranker, scored.split.ranking)}
    rankers.update(
        {name: _ranker_metrics(model.ranker, scored.split.ranking) for name, (model, _) in scored.comparisons.items()}
    )
    ranker = rankers[candidate_ranker]
    ranking_dirs = {candidate_ranker: ranking_dir, **(comparison_rankers or {})}
    summary = {
        "summary_version": schema.SUMMARY_VERSION,
        "model_version": scored.candidate.version,
        "blessed": decision.blessed,
        "export_n": export_n,
        "export_n_reason": (
            f"Export uses N = {export_n}: the smallest retrieval depth whose funnel {config.export_metric} "
            f"({by_n[export_n]:.4f}) is at least {1 - config.export_tolerance:.0%} of that at N = {max(by_n)} "
            f"({by_n[max(by_n)]:.4f}); the ranker's cost grows linearly with N."
        ),
        "funnel_by_n": {str(n): v for n, v in by_n.items()},
        "candidates_n": config.candidates_n,
        "gate": decision.to_json(),
        "previous_blessed": scored.previous.to_json() if scored.previous else None,
        "users": len(scored.split),
        "users_in_split": scored.split.users_total,
        "items": scored.split.num_items - schema.NUM_RESERVED,
        "ranking_metrics": ranking_metrics,
        "ranker": ranker["metrics"] if ranker else None,
        "candidate_ranker": candidate_ranker,
        "rankers": {name: r["metrics"] if r else None for name, r in rankers.items()},
        "gate_intervals": {
            "metric": config.gate.metric,
            "resamples": config.bootstrap_resamples,
            "models": {name: i.to_json() for name, i in intervals.items()},
            "differences": {name: d.to_json() for name, d in differences.items()},
        },
        "versus_last_blessed": _versus_last_blessed(scored, ranking_metrics, rankers),
        "off_policy": off_policy_summary(off_policy),
        "data_checks": checks,
        "new_items": new_item_summary(features_dir, scored.split, ranks_by_model["funnel"]),
        "lineage": lineage(features_dir, retrieval_dir, extracted_dir, scored.previous, checks),
        "training_curves": data.read_training_curves(retrieval_dir, ranking_dirs),
        "run_metadata": data.read_run_metadata(features_dir, retrieval_dir, ranking_dirs, extracted_dir),
        "examples": _example_lists(scored, config.example_users),
        **_where_models_differ(scored, ranks_by_model),
    }
    summary["run_metadata"]["parameters"]["evaluation"] = {
        "candidates_n": config.candidates_n,
        "gate_metric": config.gate.metric,
        "gate_baselines": ",".join(config.gate.baselines),
        "margin_vs_baseline": config.gate.margin_vs_baseline,
        "margin_vs_blessed": config.gate.margin_vs_blessed,
        "gate_on_ope": config.gate.use_ope,
        "gate_on_drift": config.gate.use_drift,
        "ope_estimator": config.gate.ope_estimator,
        "ope_margin": config.gate.ope_margin,
        "max_users": config.max_users,
    }
    figures = plots.report_figures(
        summary, ranks_by_model, scored.scores, export_n, {name: r for name, r in rankers.items() if r}
    )
    summary["campaign"] = data.read_campaign(campaign_path)
    summary["evaluation_s"] = round(time.perf_counter() - started, 3)
    return EvaluationResult(
        summary=summary,
        html=report.render(summary, figures, off_policy.figures),
        blessed=decision.blessed,
        export_n=export_n,
        ranker_rows=(ranker["labels"], ranker["probabilities"]) if ranker else None,
    )


def new_item_summary(features_dir, split: data.TestSplit, funnel: metrics.Ranks, k: int = 20) -> dict | None:
    """HIT@k of the funnel on test targets that are new items (no train target: launched after the cut, or never
    bought before) against popularity within the category (baselines.category_popularity_top_k), and both on every
    test target with a history (`all_targets`): the baseline's lists hold every new item of the user's category near
    their top, which wins its new-item figure and costs it elsewhere (the lifecycle week, seed 0: 0.171 against
    0.105 on new items, 0.189 against 0.399 on all). None without new-item targets."""
    import pandas as pd

    frame = pd.read_parquet(
        Path(features_dir, schema.ITEM_FEATURES), columns=["item_index", "category_index", "available", "train_count"]
    )
    size = split.num_items
    counts, category, available = np.zeros(size), np.zeros(size, np.int64), np.zeros(size, bool)
    index = frame["item_index"].to_numpy()
    counts[index], category[index] = frame["train_count"].to_numpy(), frame["category_index"].to_numpy()
    available[index] = frame["available"].to_numpy(bool)
    rows = np.flatnonzero([len(history) > 0 for history in split.hist_items])  # the baseline reads the last item
    new = counts[split.targets[rows]] == 0
    if not new.any():
        return None
    last = np.array([split.hist_items[r][-1] for r in rows], np.int64)
    lists = baselines.category_popularity_top_k(
        last, [split.seen_items[r] for r in rows], category, counts, available, k
    )
    higher = funnel.higher[rows]
    model_hits = (higher >= 0) & (higher < k)
    baseline_hits = np.array([target in row for target, row in zip(split.targets[rows], lists)], bool)
    return {
        "targets": int(new.sum()),
        f"hit@{k}": float(model_hits[new].mean()),
        f"baseline_hit@{k}": float(baseline_hits[new].mean()),
        "all_targets": {
            "targets": int(len(rows)),
            f"hit@{k}": float(model_hits.mean()),
            f"baseline_hit@{k}": float(baseline_hits.mean()),
        },
        "baseline": "popularity within the category of the user's last item (a new item counts its category's mean)",
    }


def lineage(features_dir, retrieval_dir, extracted_dir, previous: registry.BlessedModel | None, checks) -> dict:
    """Where the model came from: the data window (extract window and the split's), the parent model of a warm
    start (read from the retrieval artifact), the last blessed model it was compared with, and the data checks'
    comparison with that model's data."""

    manifest = {}
    if extracted_dir is not None and Path(extracted_dir, "manifest.json").exists():
        manifest = json.loads(Path(extracted_dir, "manifest.json").read_text())
    features = schema.FeaturesManifest.read(features_dir)
    warm = Path(retrieval_dir, "warm_start.json")
    parent = json.loads(warm.read_text()) if warm.exists() else None
    return {
        "data_window": {
            "window_start": manifest.get("window_start", ""),
            "window_end": manifest.get("window_end", ""),
            "run_time": manifest.get("run_time", ""),
            "split": features.split,
            "split_window": features.split_window,
        },
        "parent_model": parent,
        "compared_with": previous.version if previous else None,
        "data_drift": {
            "reference_version": (checks or {}).get("reference_version") or None,
            "distributions": (checks or {}).get("distributions", {}),
            "warnings": (checks or {}).get("warnings", []),
        },
    }


def _gate_intervals(ranks_by_model: dict[str, metrics.Ranks], config: EvaluationConfig, scored: _Scored):
    """Bootstrap intervals of the gate metric for the candidate funnel, the gate's baselines and the last blessed
    model, and of the candidate's paired difference with each."""
    metric = config.gate.metric
    k = (int(metric.split("@")[1]),) if "@" in metric else (20,)
    names = ["funnel", *config.gate.baselines, *(["last_blessed_funnel"] if scored.previous_scores else [])]
    per_user = {
        name: metrics.per_user_metrics(ranks_by_model[name], k)[metric] for name in names if name in ranks_by_model
    }
    return bootstrap.paired_intervals(per_user, "funnel", resamples=config.bootstrap_resamples)


def _versus_last_blessed(scored: _Scored, ranking_metrics: dict, rankers: dict) -> dict | None:
    """Stage by stage, today's candidate beside the last blessed model re-scored on today's test split:
    retrieval alone, the ranker on the ranking test rows (only when both share today's item vocabulary, as the
    ranker's rows are in it), and the funnel."""
    if scored.previous_scores is None:
        return None
    previous_ranker = None
    if models.same_vocabulary(scored.previous_model.item_ids, scored.split.item_ids):
        found = _ranker_metrics(scored.previous_model.ranker, scored.split.ranking)
        previous_ranker = found["metrics"] if found else None
    candidate_ranker = next(iter(rankers.values()))
    return {
        "version": scored.previous.version,
        "retrieval": {
            "candidate": ranking_metrics["retrieval"],
            "last_blessed": metrics.ranking_metrics(scored.previous_scores.retrieval),
        },
        "ranker": {
            "candidate": candidate_ranker["metrics"] if candidate_ranker else None,
            "last_blessed": previous_ranker,
            "note": ""
            if previous_ranker
            else "the item vocabulary changed since: the ranker's test rows are "
            "in today's vocabulary, so its AUC is not comparable",
        },
        "funnel": {"candidate": ranking_metrics["funnel"], "last_blessed": ranking_metrics["last_blessed_funnel"]},
    }


def _example_lists(scored: _Scored, users: int) -> list[dict]:
    """A few test users (spread over history lengths, fixed choice) with their last items and the candidate
    funnel's top 10, each item with its category, and whether the list holds the user's next item."""
    split = scored.split
    if not len(split) or users < 1:
        return []
    order = np.argsort(split.history_lengths, kind="stable")
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(users, len(order))).astype(int))]
    out = []
    for row in picks:
        history = [int(i) for i in split.hist_items[row][-5:]]
        recommended = [int(i) for i in scored.scores.funnel_lists[row][:10] if i >= schema.NUM_RESERVED]
        target = int(split.targets[row])
        out.append(
            {
                "user_id": str(split.user_ids[row]),
                "history_length": int(split.history_lengths[row]),
                "last_items": [_item(split, i) for i in history],
                "recommended": [{**_item(split, i), "is_next": i == target} for i in recommended],
                "next_item": _item(split, target),
            }
        )
    return out


def _item(split: data.TestSplit, index: int) -> dict:
    return {"item_id": str(split.item_ids[index]), "category": str(split.item_categories[index])}


def _gate_evidence(off_policy: data.OffPolicyOutput) -> gate.OffPolicyEvidence:
    if off_policy.result is None:
        return gate.OffPolicyEvidence(unavailable=off_policy.unavailable)
    ope = off_policy.result["ope"]
    return gate.OffPolicyEvidence(
        estimates={name: ope[name]["estimate"] for name in gate.OPE_ESTIMATORS},
        logged_click_rate=off_policy.result["logged"]["click_rate"],
    )


def off_policy_summary(off_policy: data.OffPolicyOutput) -> dict:
    """The OPE figures the report and the metrics show: per estimator its mean estimate over the simulated logs
    and, against the simulator's truth, its bias and RMSE; the importance weights' effective sample share when
    the study reports it; the logged click rate; the bandit's rewards; the same estimates of the bandit_reward
    weighting's reward when it is not click-only."""
    if off_policy.result is None:
        return {"unavailable": off_policy.unavailable}
    ope = off_policy.result["ope"]
    estimators = {name: {key: ope[name][key] for key in ("estimate", "bias", "rmse")} for name in gate.OPE_ESTIMATORS}
    return {
        "unavailable": "",
        "truth": ope["truth"],
        "target": ope.get("target"),
        "setup": {key: ope[key] for key in ("repeats", "requests_per_log", "epsilon") if key in ope},
        "weights": ope.get("weights"),
        "logged": off_policy.result["logged"],
        "estimators": estimators,
        "bandit": off_policy.result["bandit"],
        "ab": off_policy.result.get("ab"),
        "weighted": _weighted_ope(ope.get("weighted")),
    }


def _weighted_ope(weighted: dict | None) -> dict | None:
    """The OPE study of the bandit_reward weighting (ope.json's ope.weighted), when it is not click-only."""
    if not weighted:
        return None
    return {
        "reward_weighting": weighted.get("reward_weighting"),
        "truth": weighted["truth"],
        "estimators": {
            name: {key: weighted[name][key] for key in ("estimate", "bias", "rmse")} for name in gate.OPE_ESTIMATORS
        },
    }


def _score_everything(
    features_dir,
    retrieval_dir,
    ranking_dir,
    registry_dir,
    config,
    load_models,
    comparison_rankers: dict[str, str | Path],
) -> _Scored:
    split = data.read_test_split(features_dir, max_users=config.max_users)
    candidate = load_models(
        retrieval_dir, ranking_dir, config.model_version or model_version(retrieval_dir, ranking_dir)
    )
    if not models.same_vocabulary(candidate.item_ids, split.item_ids):
        raise schema.SchemaError(
            f"the candidate models in {retrieval_dir} were not trained on the features in {features_dir}: item vocabularies differ"
        )
    previous = registry.last_blessed(registry_dir) if registry_dir else None
    specs = {"candidate": (str(retrieval_dir), str(ranking_dir), candidate.version)}
    loaded = {"candidate": candidate}
    if previous is not None:
        specs["previous"] = (str(previous.retrieval_dir), str(previous.ranking_dir), previous.version)
        loaded["previous"] = load_models(*specs["previous"])
    for name, directory in comparison_rankers.items():
        specs[f"comparison.{name}"] = (str(retrieval_dir), str(directory), f"{candidate.version}-{name}")
        loaded[f"comparison.{name}"] = load_models(*specs[f"comparison.{name}"])
    baseline_models = {
        model.name: model for model in (baselines.Popularity(split.train), baselines.ItemToItem(split.train))
    }
    if config.user_scoring == "beam":
        scores, baseline_scores = beam_scoring.score_split(
            split,
            specs,
            baseline_models,
            config.candidates_n,
            config.memory_budget_mb,
            load_models,
            list(config.beam_args),
        )
    else:
        scores = {name: _score(model, split, config) for name, model in loaded.items()}
        baseline_scores = {
            name: scoring.score_baseline(model, split.hist_items, split.seen_items, split.targets)
            for name, model in baseline_models.items()
        }
    return _Scored(
        split=split,
        candidate=candidate,
        scores=scores["candidate"],
        baselines=baseline_scores,
        previous=previous,
        previous_model=loaded.get("previous"),
        previous_scores=scores.get("previous"),
        comparisons={name: (loaded[f"comparison.{name}"], scores[f"comparison.{name}"]) for name in comparison_rankers},
    )


def _where_models_differ(scored: _Scored, ranks_by_model: dict[str, metrics.Ranks]) -> dict:
    """Breakdowns by history length, user segment, target popularity and target category, and coverage /
    popularity bias of the lists."""
    split = scored.split
    item_bucket = breakdowns.item_popularity_buckets(split.popularity)
    lists = {
        "funnel": scored.scores.funnel_lists,
        "retrieval": scored.scores.retrieval_lists,
        **{f"funnel_{name}": s.funnel_lists for name, (_, s) in scored.comparisons.items()},
        **{name: b.lists for name, b in scored.baselines.items()},
    }
    categories, category_order = breakdowns.category_labels(split.target_categories)
    return {
        "breakdowns": {
            "history_length": breakdowns.breakdown(
                ranks_by_model, breakdowns.history_bucket_labels(split.history_lengths)
            ),
            "segment": breakdowns.breakdown(
                ranks_by_model, breakdowns.segment_labels(split.history_lengths), order=list(breakdowns.SEGMENTS)
            ),
            "target_popularity": breakdowns.breakdown(
                ranks_by_model, item_bucket[split.targets], order=list(breakdowns.POPULARITY_BUCKETS)
            ),
            "target_category": breakdowns.breakdown(ranks_by_model, categories, order=category_order),
        },
        "list_statistics": {
            n: breakdowns.list_statistics(top, split.popularity, item_bucket) for n, top in lists.items()
        },
        "target_popularity": {
            "arp": float(split.popularity[split.targets].mean()),
            "tail_share": float(np.mean(item_bucket[split.targets] == "tail")),
        },
    }


def _score(model: models.ServingModel, split: data.TestSplit, config: EvaluationConfig) -> scoring.ModelScores:
    return scoring.score_model(
        model,
        split.hist_matrix,
        split.seen_items,
        split.targets,
        split.item_ids,
        split.popularity,
        config.candidates_n,
        config.memory_budget_mb,
        split.behaviour,
    )


def _ranker_metrics(ranker, ranking: dict | None) -> dict | None:
    """AUC, GAUC (grouped by user) and logloss of the ranker on the ranking test rows."""
    if ranking is None or not len(ranking.get(schema.LABEL, ())):
        return None
    labels = ranking[schema.LABEL].astype(np.float64)
    probabilities = scoring.ranker_probabilities(ranker, ranking)
    if labels.min() == labels.max():
        return None  # one class only: AUC undefined
    gauc = metrics.gauc(labels, probabilities, ranking[schema.USER])
    values = {
        "auc": metrics.auc(labels, probabilities),
        "gauc": None if np.isnan(gauc) else gauc,  # None: no user with both labels
        "logloss": metrics.logloss(labels, probabilities),
        "rows": int(len(labels)),
    }
    return {"metrics": values, "labels": labels, "probabilities": probabilities}


def run_evaluation(
    features_dir: str | Path,
    retrieval_dir: str | Path,
    ranking_dir: str | Path,
    summary_path: str | Path,
    report_path: str | Path,
    registry_dir: str | Path | None = None,
    config: EvaluationConfig = EvaluationConfig(),
    load_models: Callable[..., models.ServingModel] = models.load_serving_model,
    off_policy_dir: str | Path | None = None,
    comparison_rankers: dict[str, str | Path] | None = None,
    extracted_dir: str | Path | None = None,
    candidate_ranker: str = "ranker",
    campaign_path: str | Path | None = None,
) -> EvaluationResult:
    """Evaluates, registers the model when blessed, and writes summary JSON and HTML report atomically."""
    result = evaluate(
        features_dir,
        retrieval_dir,
        ranking_dir,
        registry_dir,
        config,
        load_models,
        off_policy_dir,
        comparison_rankers,
        extracted_dir,
        candidate_ranker,
        campaign_path,
    )
    if result.blessed and registry_dir:
        entry = registry.register(
            registry_dir,
            result.summary["model_version"],
            retrieval_dir,
            ranking_dir,
            {
                "blessed_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "gate": result.summary["gate"],
                "ranking_metrics": result.summary["ranking_metrics"],
                "lineage": result.summary["lineage"],
                data_checks.DATA_STATS: data_checks.read_statistics(features_dir),
            },
        )
        result.summary["registered"] = entry.to_json()
    atomic.write_text(report_path, result.html)
    schema.EvaluationSummary.from_json(result.summary).write(summary_path)
    return result


def run(
    features: str,
    retrieval_model: str,
    ranking_model: str,
    report: str,
    summary: str,
    registry_dir: str = "",
    candidates_n: int = 200,
    gate_metric: str = "ndcg@20",
    gate_baselines: str = "popularity,item_to_item",
    margin_vs_baseline: float = 0.0,
    margin_vs_blessed: float = 0.0,
    model_version: str = "",
    gate_on_ope: bool = False,
    ope_estimator: str = gate.DEFAULT_OPE_ESTIMATOR,
    ope_margin: float = 0.0,
    off_policy: str | None = None,
    baseline_ranking_model: str | None = None,
    extracted: str | None = None,
    campaign: str | None = None,
    load_models: Callable[..., models.ServingModel] | None = None,
    gate_on_drift: bool = False,
    user_scoring: str = "in_process",
    beam_args: str = "[]",
    max_users: int = 0,
) -> dict:
    """The evaluation stage's entry: writes `summary` (JSON) and `report` (HTML), registers a blessed model in
    `registry_dir`, and returns the figures: the KFP scalars of flat_metrics (with `blessed` 0/1), plus the ranker's
    ROC curve and confusion matrix at 0.5 for a classification view. `baseline_ranking_model` (the DIN baseline) is
    scored beside the candidate for the report, never gated; `campaign` (the campaign evaluation's folder) goes into
    the report; `load_models` replaces the artifact loader in tests. `user_scoring` "beam" scores the models and
    baselines over user shards on Beam (`beam_args`: the features stage's JSON list; "[]" = two local workers)."""
    config = EvaluationConfig(
        candidates_n=candidates_n,
        gate=gate.GateConfig(
            metric=gate_metric,
            baselines=tuple(b.strip() for b in gate_baselines.split(",") if b.strip()),
            margin_vs_baseline=margin_vs_baseline,
            margin_vs_blessed=margin_vs_blessed,
            use_ope=gate_on_ope,
            ope_estimator=ope_estimator,
            ope_margin=ope_margin,
            use_drift=gate_on_drift,
        ),
        model_version=model_version,
        user_scoring=user_scoring,
        beam_args=tuple(parse_beam_args(beam_args)),
        max_users=max_users,
    )
    candidate = ranker_name(ranking_model, "ranker")
    comparisons = {}
    for index, directory in enumerate([baseline_ranking_model] if baseline_ranking_model else []):
        name = ranker_name(directory, f"ranker_{index + 2}")
        comparisons[name if name not in comparisons and name != candidate else f"{name}_{index + 2}"] = directory
    result = run_evaluation(
        features,
        retrieval_model,
        ranking_model,
        summary,
        report,
        registry_dir=registry_dir or None,
        config=config,
        off_policy_dir=off_policy,
        comparison_rankers=comparisons,
        extracted_dir=extracted,
        candidate_ranker=candidate,
        campaign_path=campaign,
        **({"load_models": load_models} if load_models else {}),
    )
    figures: dict = flat_metrics(result.summary)
    if result.ranker_rows is not None:
        figures.update(classification_figures(*result.ranker_rows))
    done = result.summary
    print(
        f"evaluation: {'BLESSED' if result.blessed else 'NOT BLESSED'}: funnel {done['gate']['metric']} "
        f"{done['gate']['candidate']:.4f} on {done['users']} test users"
    )
    print("\n".join(done["gate"]["reasons"]))
    print(done["export_n_reason"])
    return figures


def ranker_name(ranking_dir: str | Path, fallback: str) -> str:
    """The model type a ranking artifact recorded (dien, din, ...), so the report names rankers as trained."""
    if not Path(ranking_dir, schema.RANKER_INFO_FILE).exists():
        return fallback
    return schema.RankerInfo.read(ranking_dir).model_type or fallback


ROC_POINTS = 200  # the console draws a curve, not every threshold


def classification_figures(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """The ranker's ROC curve (at most ROC_POINTS points, finite thresholds) and confusion matrix at 0.5, under
    the keys kfp_metrics.log_metrics gives a ClassificationMetrics artifact."""
    fpr, tpr, thresholds = metrics.roc_curve(labels, probabilities)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
    finite = np.where(np.isfinite(thresholds), thresholds, 1.0 + float(np.max(probabilities, initial=0.0)))
    predicted = probabilities >= 0.5
    positive = labels == 1
    matrix = [
        [int((~positive & ~predicted).sum()), int((~positive & predicted).sum())],
        [int((positive & ~predicted).sum()), int((positive & predicted).sum())],
    ]
    return {
        kfp_metrics.ROC_CURVE: {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "thresholds": finite[keep].tolist(),
        },
        kfp_metrics.CONFUSION_MATRIX: {"categories": ["no purchase", "purchase"], "matrix": matrix},
    }


def kfp_metric_name(group: str, metric: str) -> str:
    """'funnel', 'hit@20' -> 'funnel_hit_at_20': names the Vertex console shows without escaping."""
    return f"{group}_{metric}".replace("@", "_at_").replace(".", "_")


def flat_metrics(summary: dict) -> dict[str, float]:
    """The scalars logged as KFP Metrics."""
    out = {
        kfp_metric_name(model, m): v for model, values in summary["ranking_metrics"].items() for m, v in values.items()
    }
    if summary.get("ranker"):
        out.update({f"ranker_{k}": float(v) for k, v in summary["ranker"].items() if k != "rows" and v is not None})
    for model, stats in summary["list_statistics"].items():
        out.update({kfp_metric_name(model, k): v for k, v in stats.items()})
    out["blessed"] = float(summary["blessed"])
    out["export_n"] = float(summary["export_n"])
    out.update(_off_policy_metrics(summary["off_policy"]))
    return out


def _off_policy_metrics(off_policy: dict) -> dict[str, float]:
    """ope_truth, ope_logged_click_rate, ope_<estimator>_{estimate,bias,rmse}, bandit_<policy>_cumulative_reward."""
    if off_policy["unavailable"]:
        return {}
    out = {"ope_truth": off_policy["truth"], "ope_logged_click_rate": off_policy["logged"]["click_rate"]}
    for name, figures in off_policy["estimators"].items():
        out.update({f"ope_{name}_{key}": figures[key] for key in ("estimate", "bias", "rmse")})
    out.update(
        {
            f"bandit_{policy}_cumulative_reward": values["cumulative_reward"]
            for policy, values in off_policy["bandit"].items()
            if "cumulative_reward" in values
        }
    )
    return out


def bench_keys(summary: schema.EvaluationSummary) -> dict:
    """The bench keys of this stage (`funnel`, `baselines.*`, `evaluation.*`: the gate's outcome, the depth and
    the time) from the summary that `run` wrote; bench/stages.py runs the stage through `run` and reads them."""
    s = summary.to_json()
    return {
        "funnel": s["ranking_metrics"]["funnel"],
        "baselines": {name: s["ranking_metrics"][name] for name in ("popularity", "item_to_item")},
        "evaluation": {
            "blessed": s["blessed"],
            "export_n": s["export_n"],
            "retrieval": s["ranking_metrics"]["retrieval"],
            "coverage@20": s["list_statistics"]["funnel"]["coverage@20"],
            "evaluation_s": s["evaluation_s"],
        },
    }
