"""make lifecycle-bench: a week of daily runs on the synthetic shop, cold vs warm-started retrieval and DIEN.

    python -m bench.lifecycle --out bench/results/bench.json [--seeds 3] [--days 7] [--scale 20]

The shop (a small preset; --scale K, 20 by default, multiplies its users, items, brands and the items launched and
retired per day by K, its categories by sqrt(K): 18,000 users and 4,800 items, where a run's epochs outweigh its fixed
start-up as a real shop's do, see Time below; --scale 1 runs the 900-user preset in minutes) logs its history once; the week then adds new items each
day (their events before the launch are removed, so they are unseen until then) and retires some (no events after
it, unavailable in the catalogue from then on). Day k's run has run_time = the end of its day and extracts the last
WINDOW_DAYS whole days (the window_days extract); the features use the time split with its default cut (train
before the last two days, valid the day before the last, test the last), so every run asks "what will they want
tomorrow". On INJECTED_DAY the upstream breaks: every category is renamed in the items table.

Per day: the data checks against the last blessed run's statistics (the same code the features stage runs), then
per seed a cold run and a warm one from that seed's last blessed warm run: retrieval (COLD_EPOCHS, early stopping;
warm WARM_EPOCHS, each over the examples its parent did not train on plus RetrievalConfig.warm_replay of the
others; both arms then refit through valid, RetrievalConfig.refit_epochs) and then DIEN on hard negatives from that
arm's retrieval model (RANKING_EPOCHS; warm min(RANKING_EPOCHS, WARM_EPOCHS), the pipeline's rule, over the rows its
parent did not train on plus RANKING_REPLAY of the others: ranking.warm_start.warm_training_set, as the ranking
stage trains). A day is blessed when its data checks found no drift
(gate_on_drift=true; the bench has no evaluation stage, so the metric gate is not applied); a blessed day registers
its data statistics (and is the next day's parent). Test NDCG@20 is retrieval's, full catalogue, seen items
excluded; the ranker's figure is its test AUC. The models stay in memory: a run writes only what tomorrow's warm
start reads (weights.npz and the configuration), not the SavedModels (the export is no part of training time).

Time: train_s (wall) and train_cpu_s (process CPU, steadier on a shared machine) of the whole training; for
retrieval also startup_cpu_s (model build, warm-start initialisation and graph tracing before the first epoch,
which every run pays whatever its epochs) and epochs_cpu_s = train_cpu_s - startup_cpu_s (the epochs with their
validation, and the refit, which builds and traces a model of its own). warm_over_cold gives both ratios per day, the
target being 1/3. The fixed part of a run (scale 8, per train() call: model build 0.6, tracing the train step 1.8,
the graphs' first execution ~0.9 CPU s; a run makes two calls, selection and refit) does not grow with the shop while
an epoch does (scale 8: 0.5 CPU s, ~0.06 CPU s per 1,000 users), so the ratio falls with --scale: a real shop's
epochs dominate (the Beauty run: 466 CPU s, 12 + 2 epochs), the preset's do not.

Tuning (--first-seed 10 --seeds 1, never the reported seeds 0-2; choices on VALID figures: each arm's valid_ndcg@20
of its selected epoch and DIEN's valid_auc): --warm-epochs and --ranking-replay set the warm arm, --tune E:R adds
warm arms of E epochs and DIEN replay R beside it (their own parents, their own `<arm>_over_cold` ratios).

New items: test targets whose item has no train event (launched in the valid or test day). HIT@20 of the cold
and warm models on those targets against popularity within the category (items of the user's last category first,
by train count, a new item counting its category's mean count; then everything else by train count: it knows
the user's last category, not the target's). new_items.by_path splits the targets by how each arm's model scores
them: by_id (the refit through valid or the parent trained its id row) or features_only (first seen on the test day).
new_items.all_targets_hit@20 scores the same lists on every test target with a history, known items too: the
baseline's lists hold every new item of the user's category near its top, which its new-item figure rewards and
the rest of its targets pay for.

Writes `lifecycle` into the bench JSON (beside its other keys): days[i].{cold,warm}.{train_s, train_cpu_s,
startup_cpu_s, epochs_cpu_s, ndcg@20, valid_ndcg@20, epoch_examples, per_seed, spread, epochs},
days[i].ranker.{cold,warm}.{train_s, train_cpu_s, auc, valid_auc, train_rows, ...}, days[i].warm_over_cold (and a
tuning arm's days[i].<arm> and days[i].<arm>_over_cold), days[i].{day, run_time, drift, blessed, new_item_targets}, new_items,
drift.fired_days, settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench import new_items
from components import atomic, registry, schema
from components.extract.runner import relative_window
from components.features import data_checks
from components.features.pipeline import run_features
from components.retrieval.config import RetrievalConfig
from components.warehouse import synthetic

PRESET = synthetic.ShopConfig(
    n_users=900, n_items=240, n_categories=8, n_brands=24, mean_views_per_user=16, days=24, mean_session_views=3.0
)
FIRST_RUN_DAY = 10  # day index (from the shop's epoch) whose end is the first run's run_time
WINDOW_DAYS = 8
NEW_PER_DAY = 6
RETIRED_PER_DAY = 3
INJECTED_DAY = 5  # 1-based day of the week whose upstream breaks
# the week's shop: the preset x 20 (18,000 users). On the preset (900 users) a run's fixed start-up (~6.6 CPU s: model
# build, tracing and first execution, for the selection and again for the refit) outweighs its epochs (~0.06 CPU s
# per 1,000 users), so no warm run can take a third of a cold one's time there; a real shop's epochs dominate
SCALE = 20
# the pipeline's defaults (retrieval_epochs, warm_start_epochs). Tuning seed 10 (not a reported one), --scale 8, VALID
# figures of day 2 (both arms refit through valid): retrieval NDCG@20 cold 0.2084, warm 1 epoch 0.2017, 2 epochs
# 0.2050; DIEN AUC cold 0.5932, warm 1 epoch (replay 0.2) 0.5921, 2 epochs replay 0.2 0.5986, replay 0.5 0.5931.
# Before the refit and DIEN's replay (scale 1, seed 10) 1 or 2 warm epochs stayed below cold on most days, 4 reached it
COLD_EPOCHS = 12
WARM_EPOCHS = 2
RANKING_EPOCHS = 3  # the pipeline's ranking_epochs; a warm DIEN runs min(RANKING_EPOCHS, WARM_EPOCHS)
RANKING_REPLAY = 0.2  # ranking.warm_start.WARM_REPLAY: a warm DIEN's share of its parent's rows (set in main)
SETTINGS = dict(embedding_dim=16, max_len=8, batch_size=256, patience=2)
OVERRIDES: dict = {}  # RetrievalConfig fields set with --set name=value (tuning runs), both arms
# more warm arms beside "warm" (tuning runs, --tune EPOCHS:REPLAY): name -> (warm epochs, DIEN's replay share)
TUNING_ARMS: dict[str, tuple[int, float]] = {}
WITH_RANKER = True  # False (--retrieval-only, a probe of retrieval's time at a scale): no DIEN


def log(message: str) -> None:
    """A timestamped progress line on stderr, so the JSON on stdout or in --out stays clean."""
    print(f"[lifecycle {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Shop:
    events: pa.Table
    items: pa.Table
    launch_us: dict[str, int]  # item -> launch time
    retire_us: dict[str, int]  # item -> retirement time


def shop_config(scale: float = 1) -> synthetic.ShopConfig:
    """PRESET with `scale` times its users, items and brands (and sqrt(scale) times its categories)."""
    return dataclasses.replace(
        PRESET,
        n_users=round(PRESET.n_users * scale),
        n_items=round(PRESET.n_items * scale),
        n_brands=round(PRESET.n_brands * scale),
        n_categories=round(PRESET.n_categories * scale**0.5),
    )


def make_shop(config: synthetic.ShopConfig, days: int, seed: int = 0, scale: float = 1) -> Shop:
    """The shop's log, with scale * NEW_PER_DAY items launched and scale * RETIRED_PER_DAY retired on each day of the
    week and the two days before it (so the first run's valid and test days have new items too)."""
    world = synthetic.make_world(config, seed)
    events = pa.concat_tables([c.events for c in synthetic.iter_chunks(world, with_impressions=False)])
    items = synthetic.items_table(world)
    rng = np.random.default_rng(seed + 1)
    ids = np.asarray(items.column("item_id").to_pylist())
    popularity = np.asarray(world.item_popularity, np.float64)
    order = rng.choice(len(ids), size=len(ids), replace=False, p=popularity / popularity.sum())
    launch, retire, k = {}, {}, 0
    for day in range(FIRST_RUN_DAY - 2, FIRST_RUN_DAY + days):
        start = synthetic.EPOCH_US + day * synthetic.DAY_US
        for _ in range(round(NEW_PER_DAY * scale)):
            launch[ids[order[k]]] = start + int(rng.integers(0, synthetic.DAY_US // 2))
            k += 1
        for _ in range(round(RETIRED_PER_DAY * scale)):
            retire[ids[order[k]]] = start + int(rng.integers(0, synthetic.DAY_US))
            k += 1
    ts = events.column("event_ts").cast(pa.int64()).to_numpy()
    item = np.asarray(events.column("item_id").to_pylist())
    keep = np.ones(len(ts), bool)
    for ident, when in launch.items():
        keep &= ~((item == ident) & (ts < when))
    for ident, when in retire.items():
        keep &= ~((item == ident) & (ts >= when))
    return Shop(events.filter(pa.array(keep)), items, launch, retire)


def write_day(shop: Shop, run_time: dt.datetime, out: Path, broken: bool) -> Path:
    """The extract output of one daily run: window_days window, the catalogue as of run_time."""
    start, end = relative_window(WINDOW_DAYS, run_time)
    start_us, end_us = (int(t.timestamp() * 10**6) for t in (start, end))
    ts = shop.events.column("event_ts").cast(pa.int64())
    events = shop.events.filter(pc.and_(pc.greater_equal(ts, start_us), pc.less(ts, end_us)))
    ids = shop.items.column("item_id").to_pylist()
    listed = [shop.launch_us.get(i, 0) < end_us for i in ids]
    items = shop.items.filter(pa.array(listed))
    available = [
        a and shop.retire_us.get(i, end_us + 1) > end_us
        for i, a in zip(items.column("item_id").to_pylist(), items.column("available").to_pylist())
    ]
    items = items.set_column(
        items.schema.get_field_index("available"), schema.ITEMS.field("available"), pa.array(available)
    )
    if broken:  # the upstream renamed every category
        renamed = pc.binary_join_element_wise("broken-", items.column("category"), "")
        items = items.set_column(items.schema.get_field_index("category"), schema.ITEMS.field("category"), renamed)
    out.mkdir(parents=True)
    pq.write_table(events.cast(schema.EVENTS), out / "events.parquet")
    pq.write_table(items.cast(schema.ITEMS), out / "items.parquet")
    manifest = {
        "source": "synthetic:lifecycle",
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "run_time": run_time.isoformat(),
        "rows": {"events": events.num_rows, "items": items.num_rows},
        "dropped": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


class InMemoryRetriever:
    """A trained retrieval model as the ranker's hard-negative source (ranking.training.training_set), unexported."""

    def __init__(self, model):
        self.model = model
        self.item_embeddings = model.item_embeddings()

    def encode(self, hist_items: np.ndarray, hist_cats: np.ndarray) -> np.ndarray:
        """Query embeddings [B, D] of index histories, as model_io.Retriever.encode."""
        from components.retrieval.training import encode_queries

        return encode_queries(self.model, hist_items, hist_cats)


def arm_entry(metrics: dict[str, dict], epochs: list[int]) -> dict:
    """DESIGN.md's seeded layout: the median of each metric, then per_seed and spread beside them."""
    return {
        **{name: m["median"] for name, m in metrics.items()},
        "per_seed": {name: m["per_seed"] for name, m in metrics.items()},
        "spread": {name: m["spread"] for name, m in metrics.items()},
        "epochs": epochs,
    }


def _median(values: list[float]) -> dict:
    return {
        "median": round(float(np.median(values)), 6),
        "per_seed": [round(v, 6) for v in values],
        "spread": round(float(max(values) - min(values)), 6),
    }


@dataclasses.dataclass
class Run:
    """One seed's day in one arm: retrieval and DIEN figures, and what tomorrow's warm start reads."""

    retrieval: dict  # train_s, train_cpu_s, startup_cpu_s, epochs_cpu_s, ndcg@20, epochs
    ranker: dict  # train_s, train_cpu_s, auc, epochs
    new_hits: list[int]
    retrieval_dir: Path  # weights.npz + config.json
    ranker_parent: object  # ranking.warm_start.Parent of this run's DIEN
    known: np.ndarray  # bool [num_items]: items the retrieval model scores with their id row (the rest by features)


def run_day_seed(
    features: Path, test, catalogue, seed: int, out: Path, parent, version: str, warm: tuple[int, float] | None = None
) -> tuple[Run, np.ndarray]:
    """Retrieval, then DIEN on its hard negatives, cold (parent None) or warm from parent = (retrieval artifact,
    ranking Parent, version) with warm = (warm epochs, DIEN's replay share; None: WARM_EPOCHS, RANKING_REPLAY);
    returns the run and the retrieval model's test lists."""
    from components import warm_start as shared
    from components.ranking import warm_start as ranking_warm
    from components.ranking.base import ModelConfig
    from components.ranking.data import load_split
    from components.ranking.training import TrainConfig, fit_and_measure, training_set
    from components.retrieval import training, warm_start
    from components.retrieval.config import RetrievalConfig

    warm_epochs, ranking_replay = warm or (WARM_EPOCHS, RANKING_REPLAY)
    config = dataclasses.replace(
        RetrievalConfig(), **SETTINGS, **OVERRIDES, seed=seed, epochs=warm_epochs if parent else COLD_EPOCHS
    )
    loaded = warm_start.Parent.load(parent[0], parent[2]) if parent else None
    result = training.train_from_features(features, config, loaded)
    metrics = training.evaluate(result.model, test)
    # with the history's time, as evaluate() and serving encode (a model with time_gaps reads every step unknown without)
    queries = training.encode_queries(result.model, test.hist_items, test.hist_cats, test.gaps())
    lists = new_items.top_lists(queries, result.model.item_embeddings(), test.seen_items, catalogue.available)
    known = result.model.candidate_tower.id_weight.numpy()[:, 0] > 0
    out.mkdir(parents=True)
    # what a warm start reads: weights.npz (with the train examples' keys), config.json
    warm_start.save(result.model, result.catalogue, out, result.train_keys)
    config.write(out)
    retrieval = {
        "train_s": result.train_s,
        "train_cpu_s": result.train_cpu_s,
        "startup_cpu_s": result.startup_cpu_s,
        "epochs_cpu_s": result.train_cpu_s - result.startup_cpu_s,
        "ndcg@20": metrics["ndcg@20"],
        "valid_ndcg@20": result.valid_metrics["ndcg@20"],  # of the selected epoch: what an option is chosen on
        "epochs": result.epochs_run,
        "epoch_examples": result.train_examples,  # a warm run's: the new examples plus its replay share
    }
    if not WITH_RANKER:
        log(
            f"{out.name}: retrieval {result.epochs_run} epochs, {result.train_s:.1f} s ({result.train_cpu_s:.1f} CPU "
            f"s, {result.startup_cpu_s:.1f} of them start-up), valid ndcg@20 {result.valid_metrics['ndcg@20']:.4f}"
        )
        return Run(retrieval, {}, [], out, None, known), lists
    spec = schema.FeatureSpec.read(features)
    model_config = ModelConfig(model_type="dien")
    train_config = TrainConfig(epochs=min(RANKING_EPOCHS, warm_epochs) if parent else RANKING_EPOCHS, seed=seed)
    valid = load_split(features, "valid")
    ranking_set = training_set(str(features), train_config, None, InMemoryRetriever(result.model), valid)
    # a warm DIEN trains on the rows its parent did not (the stage's rule) plus RANKING_REPLAY of the others
    ranking_set, ranking_keys, replayed = ranking_warm.warm_training_set(
        ranking_set, features, parent[1] if parent else None, ranking_replay, seed
    )
    seeded = (parent[1], str(features)) if parent else None
    fitted = fit_and_measure(
        model_config,
        train_config,
        spec,
        ranking_set,
        valid,
        load_split(features, "test"),
        seeded,
    )
    ranked = fitted.metrics
    ranking_dir = out / "ranking"
    ranking_dir.mkdir()
    ranking_warm.save(
        fitted.model, features, ranking_dir, ranking_warm.trained_keys(features, ranking_keys, ranking_set)
    )
    model_json = json.loads(json.dumps(dataclasses.asdict(model_config)))  # as ranker.json holds it
    ranker_parent = ranking_warm.Parent(version, shared.load_arrays(ranking_dir), model_json)
    ranker_entry = {k: float(ranked[k]) for k in ("train_s", "train_cpu_s", "auc", "valid_auc", "epochs_run")}
    ranker_entry["epochs"] = int(ranker_entry.pop("epochs_run"))
    ranker_entry["train_rows"] = replayed.get("train_rows", len(ranking_keys))
    log(
        f"{out.name}: retrieval {result.epochs_run} epochs, {result.train_s:.1f} s ({result.train_cpu_s:.1f} CPU s, "
        f"{result.startup_cpu_s:.1f} of them start-up), test ndcg@20 {metrics['ndcg@20']:.4f}; DIEN "
        f"{ranker_entry['epochs']} epochs, {ranked['train_s']:.1f} s ({ranked['train_cpu_s']:.1f} CPU s), "
        f"test AUC {ranked['auc']:.4f}" + (f" (warm from {parent[2]})" if parent else "")
    )
    return Run(retrieval, ranker_entry, [], out, ranker_parent, known), lists


def run_week(out_json: Path, seeds: int, days: int, work: Path, scale: float = 1, first_seed: int = 0) -> dict:
    """The lifecycle bench: a week of daily runs, cold against warm start, with the data checks; writes `out_json`.
    The models' seeds are first_seed .. first_seed + seeds - 1 (a tuning run takes seeds that are not reported)."""
    from components.retrieval.data import load_catalogue, load_examples

    started = time.perf_counter()
    shop = make_shop(shop_config(scale), days, scale=scale)
    log(
        f"shop: {shop.events.num_rows} events, {shop.items.num_rows} items, {len(shop.launch_us)} launched, "
        f"{len(shop.retire_us)} retired during the week"
    )
    registry_dir = work / "registry"
    empty = work / "empty"
    empty.mkdir(parents=True)
    arms = {"warm": (WARM_EPOCHS, RANKING_REPLAY), **TUNING_ARMS}
    parents: dict[tuple[str, int], tuple[Path, object, str]] = {}
    table, drift_days = [], []
    new_hits: dict[str, list[int]] = {"cold": [], "baseline": [], **{arm: [] for arm in arms}}
    # HIT@20 of every test target with a history (what the baseline needs), per arm and the baseline, pooled
    all_hits: dict[str, list[int]] = {"cold": [], "baseline": [], **{arm: [] for arm in arms}}
    # per arm, (model hit, baseline hit, target known by id) of each new-item target and seed: new_items.by_path
    paths: dict[str, list[tuple[int, int, bool]]] = {"cold": [], **{arm: [] for arm in arms}}
    new_targets_total = 0
    recommended_unavailable = 0

    def summary() -> dict:  # the JSON so far, rewritten after each day
        return _summary(
            table,
            new_hits,
            all_hits,
            paths,
            new_targets_total,
            drift_days,
            recommended_unavailable,
            seeds,
            started,
            scale,
            first_seed,
        )

    for day in range(1, days + 1):
        run_time = dt.datetime.fromtimestamp(
            (synthetic.EPOCH_US + (FIRST_RUN_DAY + day) * synthetic.DAY_US) / 10**6, dt.timezone.utc
        ) + dt.timedelta(hours=3)  # 03:00 on the day after: the window ends at that day's midnight
        extract = write_day(shop, run_time, work / f"day{day}" / "extract", broken=day == INJECTED_DAY)
        features = work / f"day{day}" / "features"
        run_features(
            str(extract),
            str(features),
            max_len=SETTINGS["max_len"],
            split="time",
            beam_args=["--runner=FnApiRunner"],
            registry_dir=str(registry_dir),
        )
        stats, checks = data_checks.read_statistics(features), data_checks.read_checks(features)
        drifted = bool(checks["warnings"])
        if drifted:
            drift_days.append(day)
        test = load_examples(features, "test", SETTINGS["max_len"])
        catalogue = load_catalogue(features)
        new_rows = new_items.new_item_rows(test, catalogue)
        new_rows = new_rows[[catalogue.item_ids[test.target_item[r]] in shop.launch_us for r in new_rows]]
        new_targets_total += len(new_rows)
        baseline_hits = new_items.hits(
            new_items.category_popularity_lists(catalogue, test, new_rows), test.target_item[new_rows]
        )
        new_hits["baseline"] += baseline_hits
        with_history = new_items.rows_with_history(test)
        all_hits["baseline"] += new_items.hits(
            new_items.category_popularity_lists(catalogue, test, with_history), test.target_item[with_history]
        )
        entry: dict = {
            "day": day,
            "run_time": run_time.isoformat(),
            "drift": checks.get("distributions", {}),
            "drift_warnings": checks["warnings"],
            "blessed": not drifted,
            "new_item_targets": int(len(new_rows)),
            "test_examples": len(test),
        }
        runs: dict[str, list[Run]] = {"cold": [], **{arm: [] for arm in arms}}
        for arm in runs:
            for seed in range(seeds):
                parent = parents.get((arm, seed))
                if arm != "cold" and parent is None:  # no blessed parent yet: the warm arm is the cold run
                    runs[arm].append(runs["cold"][seed])
                    continue
                out = work / f"day{day}" / f"{arm}-{seed}"
                run, lists = run_day_seed(
                    features, test, catalogue, first_seed + seed, out, parent, f"day{day}", arms.get(arm)
                )
                recommended_unavailable += int((~catalogue.available[lists]).sum())
                run.new_hits = new_items.hits(lists[new_rows], test.target_item[new_rows])
                all_hits[arm] += new_items.hits(lists[with_history], test.target_item[with_history])
                runs[arm].append(run)
        for arm in runs:
            retrieval = {
                k: _median([r.retrieval[k] for r in runs[arm]]) for k in runs[arm][0].retrieval if k != "epochs"
            }
            entry[arm] = arm_entry(retrieval, [r.retrieval["epochs"] for r in runs[arm]])
            new_hits[arm] += [h for r in runs[arm] for h in r.new_hits]
            for r in runs[arm]:
                paths[arm] += zip(r.new_hits, baseline_hits, r.known[test.target_item[new_rows]].tolist())
        entry["ranker"] = (
            {}
            if not WITH_RANKER
            else {
                arm: arm_entry(
                    {
                        k: _median([r.ranker[k] for r in runs[arm]])
                        for k in ("train_s", "train_cpu_s", "auc", "valid_auc", "train_rows")
                    },
                    [r.ranker["epochs"] for r in runs[arm]],
                )
                for arm in runs
            }
        )
        for arm in arms:
            entry["warm_over_cold" if arm == "warm" else f"{arm}_over_cold"] = {
                f"retrieval_{k}": round(entry[arm][k] / entry["cold"][k], 3) for k in ("train_cpu_s", "epochs_cpu_s")
            }
            if WITH_RANKER:
                entry["warm_over_cold" if arm == "warm" else f"{arm}_over_cold"]["ranker_train_cpu_s"] = round(
                    entry["ranker"][arm]["train_cpu_s"] / entry["ranker"]["cold"]["train_cpu_s"], 3
                )
        if not drifted:
            version = f"day{day}"
            registry.register(
                registry_dir, version, runs["cold"][0].retrieval_dir, empty, {data_checks.DATA_STATS: stats}
            )
            registry.promote(registry_dir, version)
            for arm in arms:
                for seed, run in enumerate(runs[arm]):
                    parents[arm, seed] = (run.retrieval_dir, run.ranker_parent, version)
        table.append(entry)
        _write(out_json, summary())
        log(
            f"day {day}: drift {'FIRED: ' + '; '.join(checks['warnings']) if drifted else 'none'}; "
            f"new-item targets {len(new_rows)}; warm/cold {entry['warm_over_cold']}"
        )
    result = summary()
    _write(out_json, result)
    return result


def _write(out_json: Path, result: dict) -> None:
    current = json.loads(out_json.read_text()) if out_json.exists() else {}
    current["lifecycle"] = result
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_json, current)


def _summary(
    table, new_hits, all_hits, paths, new_targets, drift_days, unavailable, seeds, started, scale, first_seed
) -> dict:
    hit = {arm: round(float(np.mean(v)), 6) if v else None for arm, v in new_hits.items()}
    every = {arm: round(float(np.mean(v)), 6) if v else None for arm, v in all_hits.items()}
    return {
        "days": table,
        "new_items": {
            "targets": new_targets,
            "hit@20": {
                **{arm: h for arm, h in hit.items() if arm != "baseline"},
                "category_popularity": hit["baseline"],
            },
            "by_path": {arm: new_items.by_path(rows) for arm, rows in paths.items()},
            # the same lists on every test target with a history: what the baseline's new-item hits cost elsewhere
            "all_targets_hit@20": {
                **{arm: h for arm, h in every.items() if arm != "baseline"},
                "category_popularity": every["baseline"],
            },
            "note": "targets whose item has no train event (launched in the valid or test day); cold and warm "
            "pooled over seeds; by_path: the targets whose item the arm's model scores by its id row (learnt in the "
            "refit through valid, or carried from the parent) and those it scores by features alone",
        },
        "drift": {
            "injected_day": INJECTED_DAY,
            "injection": "every category renamed in the items table",
            "fired_days": drift_days,
        },
        "unavailable_recommended": unavailable,
        "settings": {
            "scale": scale,
            "preset": dataclasses.asdict(shop_config(scale)),
            "window_days": WINDOW_DAYS,
            "seeds": seeds,
            "first_seed": first_seed,
            "cold_epochs": COLD_EPOCHS,
            "warm_epochs": WARM_EPOCHS,
            "ranking_epochs": RANKING_EPOCHS,
            "ranking_warm_epochs": min(RANKING_EPOCHS, WARM_EPOCHS),
            "ranking_warm_replay": RANKING_REPLAY,
            "ranker": WITH_RANKER,
            "tuning_arms": {arm: {"warm_epochs": e, "ranking_warm_replay": r} for arm, (e, r) in TUNING_ARMS.items()},
            **SETTINGS,
            "new_per_day": round(NEW_PER_DAY * scale),
            "retired_per_day": round(RETIRED_PER_DAY * scale),
            "warm_replay": RetrievalConfig().warm_replay,
            "retrieval_overrides": dict(OVERRIDES),
        },
        "total_s": round(time.perf_counter() - started, 1),
        "complete_days": len(table),
    }


def drift_week(days: int, work: Path, scale: float = 1) -> dict:
    """The data checks alone over the week (no training): which days fire, against which blessed day."""
    shop = make_shop(shop_config(scale), days, scale=scale)
    registry_dir, empty = work / "registry", work / "empty"
    empty.mkdir(parents=True)
    out = []
    for day in range(1, days + 1):
        run_time = dt.datetime.fromtimestamp(
            (synthetic.EPOCH_US + (FIRST_RUN_DAY + day) * synthetic.DAY_US) / 10**6, dt.timezone.utc
        ) + dt.timedelta(hours=3)
        extract = write_day(shop, run_time, work / f"day{day}" / "extract", broken=day == INJECTED_DAY)
        stats, checks = data_checks.run_checks(extract, registry_dir)
        if not checks["warnings"]:
            registry.register(registry_dir, f"day{day}", empty, empty, {data_checks.DATA_STATS: stats})
            registry.promote(registry_dir, f"day{day}")
        out.append(
            {
                "day": day,
                "compared_with": checks.get("reference_version") or None,
                "distributions": checks.get("distributions", {}),
                "warnings": checks["warnings"],
                "new_item_share": stats["new_item_share"],
            }
        )
        log(f"day {day}: {'FIRED ' + '; '.join(checks['warnings']) if checks['warnings'] else 'clean'}")
    return {
        "injected_day": INJECTED_DAY,
        "injection": "every category renamed in the items table",
        "fired_days": [d["day"] for d in out if d["warnings"]],
        "days": out,
    }


def main(argv: list[str] | None = None) -> None:
    """`make lifecycle-bench`: the week of daily runs (or only its data checks with --drift-only) into one JSON."""
    global WARM_EPOCHS, RANKING_REPLAY, WITH_RANKER
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/bench.json")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--scale", type=float, default=SCALE, help="shop size: times the preset's users and items")
    parser.add_argument("--first-seed", type=int, default=0, help="the models' first seed (tuning: one not reported)")
    parser.add_argument("--warm-epochs", type=int, default=WARM_EPOCHS, help="warm_start_epochs (tuning)")
    parser.add_argument("--ranking-replay", type=float, default=RANKING_REPLAY, help="a warm DIEN's replay (tuning)")
    parser.add_argument("--retrieval-only", action="store_true", help="no DIEN (a probe of retrieval's time)")
    parser.add_argument(
        "--tune", action="append", default=[], help="one more warm arm, EPOCHS:DIEN_REPLAY (tuning), e.g. 1:0.2"
    )
    parser.add_argument("--set", action="append", default=[], help="a RetrievalConfig field for both arms: name=value")
    parser.add_argument("--work", default="", help="keep the runs' folders here (default: a temporary folder)")
    parser.add_argument("--drift-only", action="store_true", help="the data checks over the week, no training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    WARM_EPOCHS, RANKING_REPLAY, WITH_RANKER = args.warm_epochs, args.ranking_replay, not args.retrieval_only
    for item in args.tune:
        epochs, _, replay = item.partition(":")
        TUNING_ARMS[f"warm_e{epochs}_r{replay or RANKING_REPLAY}"] = (int(epochs), float(replay or RANKING_REPLAY))
    fields = {f.name: f.type for f in dataclasses.fields(RetrievalConfig)}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields:
            parser.error(f"--set {item}: RetrievalConfig has no field {name!r}")
        OVERRIDES[name] = json.loads(value)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lifecycle-"))
    if args.drift_only:
        try:
            result = drift_week(args.days, work, args.scale)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
        _write(Path(args.out), {"drift": result})
        print(json.dumps(result["fired_days"]))
        return
    try:
        result = run_week(Path(args.out), args.seeds, args.days, work, args.scale, args.first_seed)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: result[k] for k in ("new_items", "drift", "unavailable_recommended", "total_s")}, indent=2))


if __name__ == "__main__":
    main()
