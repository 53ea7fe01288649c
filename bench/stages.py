"""The pipeline's stages as the bench runs them: plain Python calls in DAG order, no KFP.

Stage bench functions (owned by each stage) are found by name: `<stage>_bench` in
`components.<stage>.bench`, else in `components.<stage>`. The harness calls them with the keyword
arguments their signature asks for, out of: features_dir, extracted_dir, warehouse_path, model_dir
(= output_dir, where a model stage writes its KFP-layout artifact), model_dirs (seed -> model_dir, for a function
that runs every seed), retrieval_dir, retrieval_dirs (seed -> retrieval model), ranking_dir, evaluation_summary,
work_dir, seed, seeds, data, data_format, ablations (names from --ablations). They return bench keys with their
top-level names (`{"retrieval": {...}}`); a flat dict is filed under the stage's name.

Seeds: a model stage (retrieval, ranking) whose function takes `seeds` gets the tuple (0..n-1), is
called once, writes seed s's artifact to model_dirs[s] and reports medians itself; one that takes `seed` is
called once per seed and the harness merges the runs. Either way seed s's evaluation and export read seed s's
retrieval and ranking artifacts: each seed is a whole replicate of the funnel. Experiments get `seeds` as the count n.

A stage whose code has not landed, or that cannot run on the data (no impressions in Amazon data),
is skipped and its keys stay out of the JSON: the harness raises StageSkipped itself, and a stage
bench function says so by returning an empty dict.

The same entries as the pipeline: extract, features, evaluation, export and experiments run through the
functions their KFP components call (`components/<stage>/stage.py` `run`; experiments' `run_off_policy_evaluation`,
through experiments_bench, and export's through export_bench, which read the files the entry wrote), with the
entries' defaults except for the pipeline parameters the run sets (STAGE_PARAMETERS: --param, and a synthetic
preset's own, pipelines/presets.py), which reach each entry that reads them. Where the bench cannot, the reason is the measurement:
- retrieval and ranking: retrieval_bench and ranking_bench measure the trained model in memory on test, and ranking
  trains DIEN, DIN (and ablations) for every seed on that seed's training set (hard negatives from that seed's
  retrieval model), with bootstrap intervals over test users from
  the test scores and the speed reference; the stage entry trains one model and returns only its valid (retrieval)
  or finite (ranking) figures. They train through the stage's own code (retrieval.training.train_from_features;
  ranking.training.fit_and_measure and write_artifact, as ranking.stage does), and a bench function that
  kept no artifact gets one from the stage entry (train_artifact).
- campaign: campaign_bench measures on a time split it builds when the run's features are not one (the models
  trained through the features, retrieval and ranking entries), where the campaign-evaluation entry
  (export/campaign_eval.run) would leave the audiences out.
- warehouse and baselines have no pipeline entry: the pipeline reads an existing warehouse, and evaluation computes
  the baselines inside its run (the bench reports them on their own, from the same components.baselines).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import time
from collections.abc import Callable
from pathlib import Path

from bench.aggregate import deep_update


class StageSkipped(Exception):
    """The stage cannot run here; the message says why."""


FORMATS = ("amazon", "taobao", "synthetic")
# Top-level bench keys each discovered stage may set (contract: docs/architecture.md, "The bench contract").
STAGE_KEYS = {
    "retrieval": ("retrieval",),
    "ranking": ("ranking",),
    "export": ("export",),
    "experiments": ("ope", "bandit", "ab"),
}

# The pipeline parameters the bench runs with (PARAMS, and a synthetic preset's own: pipelines/presets.py), each as
# the keyword of the stage entries that read it: the bench's stages are the pipeline's, so a parameter reaches the
# same code. Campaign trains its own retrieval and DIEN on a time split (campaign_bench), with the same settings
# (lighter at a preset of CAMPAIGN_MODELS).
STAGE_PARAMETERS: dict[str, dict[str, str]] = {
    "max_examples_per_user": {"features": "max_examples_per_user", "campaign": "max_examples_per_user"},
    "retrieval_epochs": {"retrieval": "epochs", "campaign": "retrieval.epochs"},
    "retrieval_refit_epochs": {"retrieval": "refit_epochs", "campaign": "retrieval.refit_epochs"},
    "retrieval_valid_max_users": {"retrieval": "valid_max_users", "campaign": "retrieval.valid_max_users"},
    "train_input": {"retrieval": "train_input", "campaign": "retrieval.train_input"},
    "ranking_epochs": {"ranking": "epochs", "campaign": "ranking_epochs"},
    "ranking_refit_epochs": {"ranking": "refit_epochs", "campaign": "ranking_refit_epochs"},
    "ranking_train_input": {"ranking": "train_input", "campaign": "ranking_train_input"},
    "candidates_n": {"evaluation": "candidates_n"},
    # evaluation's sample of test users; the baselines and retrieval's own test figures score the same users
    "evaluation_max_users": {"evaluation": "max_users", "baselines": "max_users", "retrieval": "test_max_users"},
}


# The campaign stage's own time-split models (campaign_bench: the run's trained on the window it measures) at a preset
# that goes through the bench in a night: lighter than the run's, as they only stand in for them. At large, one
# retrieval epoch and no refits save ~1,000 of the campaign's ~3,300 CPU s (2495919: retrieval epochs 2-3 ~460 s, its
# refit ~125 s, DIEN's refit ~380 s with the valid steps' hard negatives); a time split of the run's own (--split time)
# needs none of them.
CAMPAIGN_MODELS: dict[str, dict] = {
    "large": {"retrieval": {"epochs": 1, "refit_epochs": 0}, "ranking_refit_epochs": 0},
}


def check_parameters(parameters: dict) -> None:
    """Refuses a pipeline parameter the bench's stages do not read (it would be recorded but not applied)."""
    unknown = sorted(set(parameters) - set(STAGE_PARAMETERS))
    if unknown:
        raise ValueError(
            f"the bench does not run with pipeline parameter(s) {unknown}; it applies {', '.join(STAGE_PARAMETERS)}"
        )


def stage_settings(stage: str, parameters: dict) -> dict:
    """The keywords of `stage`'s entry from the run's pipeline parameters; "a.b" keys nest ({"a": {"b": v}})."""
    out: dict = {}
    for name, value in parameters.items():
        keyword = STAGE_PARAMETERS.get(name, {}).get(stage)
        if keyword is None:
            continue
        group, _, field = keyword.partition(".")
        if field:
            out.setdefault(group, {})[field] = value
        else:
            out[keyword] = value
    return out


# Taobao's buy-or-not needs a time split: a purchase there is a step of its own, never the viewed step it converts,
# so leave-last-out's one-step valid and test splits hold no positive (the cvr label of a viewed step is a purchase
# of its item later in the same split). The time split's valid and test are the data's last two days.
FEATURE_SPLITS = {"amazon": "leave_last_out", "synthetic": "leave_last_out", "taobao": "time"}


@dataclasses.dataclass
class Context:
    data: str
    data_format: str
    seeds: int
    work: Path
    ablations: tuple[str, ...] = ()
    warehouse_path: Path | None = None
    extracted_dir: Path | None = None
    features_dir: Path | None = None
    retrieval_dirs: dict[int, Path] = dataclasses.field(default_factory=dict)
    ranking_dirs: dict[int, Path] = dataclasses.field(default_factory=dict)
    evaluation_summary: Path | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # the features' split: "" = the data's (FEATURE_SPLITS), else "leave_last_out" or "time" with its cut (ISO time,
    # "" = the data's end less 2 windows) and window in days (the features stage's split_cut, split_window_days)
    split: str = ""
    split_cut: str = ""
    split_window_days: float = 1.0
    # pipeline parameter -> value the stages run with (STAGE_PARAMETERS); {} = every entry's defaults
    parameters: dict = dataclasses.field(default_factory=dict)

    def settings(self, stage: str) -> dict:
        """The keywords this run's parameters give `stage`'s entry (the campaign's: its preset's CAMPAIGN_MODELS
        over them)."""
        settings = stage_settings(stage, self.parameters)
        if stage == "campaign" and self.data_format == "synthetic":
            deep_update(settings, copy.deepcopy(CAMPAIGN_MODELS.get(self.data, {})))
        return settings

    @property
    def feature_split(self) -> str:
        """The split the features stage builds: --split, else the data format's."""
        return self.split or FEATURE_SPLITS[self.data_format]

    def require(self, *names: str) -> None:
        """Skips the stage (StageSkipped) when an earlier stage's output it needs is missing."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise StageSkipped(f"needs the output of an earlier stage that did not run: {', '.join(missing)}")


def warehouse_source(data: str, data_format: str) -> str:
    """The warehouse builder's source string for --data/--format; a missing file fails here, before any work."""
    if data_format not in FORMATS:
        raise ValueError(f"unknown format {data_format!r}; expected one of {FORMATS}")
    if data_format == "synthetic":
        return f"synthetic:{data}"
    path = Path(data).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"--data {data}: no such file")
    return f"{data_format}:{path}"


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(err.name + ".")):
            raise StageSkipped(f"{module} is not in the code base yet") from err
        raise


def find_stage_function(stage: str) -> Callable:
    """`<stage>_bench` from components.<stage>.bench or components.<stage>."""
    name = f"{stage}_bench"
    looked = []
    for module_name in (f"components.{stage}.bench", f"components.{stage}"):
        looked.append(module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue
            raise
        if hasattr(module, name):
            return getattr(module, name)
    raise StageSkipped(f"no {name} function yet (looked in {', '.join(looked)})")


def call_with_context(function: Callable, available: dict, settings: dict | None = None) -> dict:
    """Calls `function` with the arguments it names, and with `settings` (the run's parameters for the stage, which
    it must take); a required one the harness lacks skips the stage."""
    kwargs = dict(settings or {})
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or parameter.name in kwargs:
            continue
        if parameter.name in available and available[parameter.name] is not None:
            kwargs[parameter.name] = available[parameter.name]
        elif parameter.default is inspect.Parameter.empty:
            raise StageSkipped(
                f"{function.__module__}.{function.__name__} needs {parameter.name!r}, which the bench cannot give"
            )
    result = function(**kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"{function.__module__}.{function.__name__} returned {type(result).__name__}, expected a dict")
    if not result:
        raise StageSkipped(f"{function.__module__}.{function.__name__} returned nothing for this data")
    return result


def file_keys(stage: str, result: dict) -> dict:
    """The stage's result under its allowed top-level keys; a flat result goes under the stage name."""
    allowed = STAGE_KEYS[stage]
    if not any(key in result for key in allowed):
        return {stage: result}
    return {key: value for key, value in result.items() if key in allowed}


def _available(ctx: Context, seed: int, stage_dir: Path, seeds_as_tuple: bool = False) -> dict:
    return {
        "features_dir": str(ctx.features_dir) if ctx.features_dir else None,
        "extracted_dir": str(ctx.extracted_dir) if ctx.extracted_dir else None,
        "warehouse_path": str(ctx.warehouse_path) if ctx.warehouse_path else None,
        "model_dir": str(stage_dir),
        "output_dir": str(stage_dir),
        "work_dir": str(stage_dir),
        "retrieval_dir": str(ctx.retrieval_dirs[seed]) if seed in ctx.retrieval_dirs else None,
        "retrieval_dirs": {s: str(path) for s, path in ctx.retrieval_dirs.items()} or None,
        "ranking_dir": str(ctx.ranking_dirs[seed]) if seed in ctx.ranking_dirs else None,
        "evaluation_summary": str(ctx.evaluation_summary) if ctx.evaluation_summary else None,
        "seed": seed,
        "seeds": tuple(range(ctx.seeds)) if seeds_as_tuple else ctx.seeds,
        "data": ctx.data,
        "data_format": ctx.data_format,
        "ablations": ctx.ablations,
    }


# ---- the stages, in DAG order -------------------------------------------------------------------
def run_warehouse(ctx: Context) -> dict:
    """Builds the DuckDB warehouse that the extract stage reads, as the shop's nightly load would."""
    module = _import("components.warehouse.duckdb_warehouse")
    path = ctx.work / "warehouse" / "shop.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = module.build_warehouse(warehouse_source(ctx.data, ctx.data_format), path, 0)
    ctx.warehouse_path = path
    return {"warehouse": {"rows": counts}}


def run_extract(ctx: Context) -> dict:
    """The extract stage's entry (extract/stage.py run) on the bench's warehouse; its row counts are the bench's."""
    ctx.require("warehouse_path")
    module = _import("components.extract.stage")
    out = ctx.work / "extract"
    manifest = module.run(f"duckdb://{ctx.warehouse_path.resolve()}", out)
    ctx.extracted_dir = out
    rows = manifest["rows"]
    return {"events": rows["events"], "users": rows["users"], "items": rows["items"]}


def run_features(ctx: Context) -> dict:
    """The features stage's entry (features/stage.py run) with the run's split (--split, else the data's); its events/s
    and manifest counts."""
    ctx.require("extracted_dir")
    module = _import("components.features.stage")
    out = ctx.work / "features"
    started = time.perf_counter()
    module.run(
        str(ctx.extracted_dir),
        str(out),
        seed=0,
        split=ctx.feature_split,
        split_cut=ctx.split_cut,
        split_window_days=ctx.split_window_days,
        **ctx.settings("features"),
    )
    elapsed = time.perf_counter() - started
    # the bench's features.stats: the manifest's counts as the JSON they are (its version is the file's, not a count)
    manifest = _import("components.schema").FeaturesManifest.read(out)
    stats = {k: v for k, v in manifest.to_json().items() if k != "manifest_version"}
    ctx.features_dir = out
    events = stats.get("events_read", stats.get("events", 0))
    return {"features": {"events_per_s": round(events / max(elapsed, 1e-9), 1), "stats": stats}}


def run_baselines(ctx: Context) -> dict:
    """Popularity and item-to-item on the test split: the figures every model must beat."""
    ctx.require("features_dir")
    from components import baselines

    return {"baselines": baselines.baseline_metrics(ctx.features_dir, **ctx.settings("baselines"))}


def takes_all_seeds(stage: str) -> bool:
    """True when the stage's bench function runs every seed itself (it names a `seeds` parameter)."""
    return "seeds" in inspect.signature(find_stage_function(stage)).parameters


def run_model_stage(stage: str, ctx: Context, seed: int | None) -> dict:
    """retrieval or ranking, for one seed or (seed=None) for all seeds in one call. Each seed's model artifact,
    written to model_dir (one seed) or model_dirs[seed] (a call that runs them all), is kept for that seed's
    evaluation and export; a seed whose bench function wrote none is trained by the stage's entry."""
    ctx.require("features_dir")
    function = find_stage_function(stage)
    seeds = [seed] if seed is not None else list(range(ctx.seeds))
    model_dirs = {s: ctx.work / f"{stage}-seed{s}" for s in seeds}
    available = _available(ctx, seeds[0], model_dirs[seeds[0]], seeds_as_tuple=seed is None)
    available["model_dirs"] = {s: str(path) for s, path in model_dirs.items()}
    result = call_with_context(function, available, ctx.settings(stage))
    dirs = ctx.retrieval_dirs if stage == "retrieval" else ctx.ranking_dirs
    for s, model_dir in model_dirs.items():
        if not (model_dir.is_dir() and any(model_dir.iterdir())):
            train_artifact(stage, ctx, s, model_dir)
        dirs[s] = model_dir
    keys = file_keys(stage, result)
    if stage == "retrieval" and ctx.feature_split == "time" and "retrieval" in keys:
        from bench import new_items  # items first seen after the cut: HIT@20 against category popularity

        keys["retrieval"]["new_items"] = new_items.retrieval_report(ctx.features_dir, model_dirs[seeds[0]])
    return keys


def train_artifact(stage: str, ctx: Context, seed: int, model_dir: Path) -> None:
    """Trains the model a second time through the stage's pipeline entry, because its bench function
    kept no artifact for evaluation and export; the note in the JSON says so and how long it took."""
    started = time.perf_counter()
    settings = ctx.settings(stage)
    if stage == "retrieval":
        settings.pop("test_max_users", None)  # the bench's own test figures, not a training setting
        _import("components.retrieval.stage").run(ctx.features_dir, model_dir, seed=seed, **settings)
    else:
        settings.setdefault("epochs", _import("components.ranking.training").TrainConfig.epochs)
        _import("components.ranking.stage").run(str(ctx.features_dir), str(model_dir), "dien", seed=seed, **settings)
    ctx.notes.append(
        f"{stage}_bench wrote no model_dir: the {stage} artifact for evaluation/export was trained "
        f"again through the stage's pipeline entry (seed {seed}, {time.perf_counter() - started:.1f}s, "
        f"included in timing.stages.{stage})"
    )


def run_evaluation(ctx: Context, seed: int) -> dict:
    """The evaluation stage's entry on one seed's pair of models; its summary gives the funnel and gate keys."""
    ctx.require("features_dir")
    if seed not in ctx.retrieval_dirs or seed not in ctx.ranking_dirs:
        raise StageSkipped("needs both a retrieval and a ranking model artifact (model_dir) from this run")
    from components import schema
    from components.evaluation import stage

    out = ctx.work / f"evaluation-seed{seed}"
    try:  # the pipeline's entry with its defaults, no registry: the summary and report it writes are the bench's
        stage.run(
            str(ctx.features_dir),
            str(ctx.retrieval_dirs[seed]),
            str(ctx.ranking_dirs[seed]),
            report=str(out / "report.html"),
            summary=str(out / "summary.json"),
            **ctx.settings("evaluation"),
        )
    except ModuleNotFoundError as err:  # a model loader of the serving API has not landed
        raise StageSkipped(f"cannot load the models: {err}") from err
    keys = stage.bench_keys(schema.EvaluationSummary.read(out / "summary.json"))
    if ctx.evaluation_summary is None:
        ctx.evaluation_summary = out / "summary.json"
    keys.pop("baselines", None)  # the baselines stage reports them, on the same split and code
    return keys


def run_export(ctx: Context) -> dict:
    """components.export.bench.export_bench: the export stage's entry (components/export/stage.py `run`) on the
    run's first pair of models into a scratch DuckDB, timed from the manifest the entry wrote."""
    seed = min(ctx.retrieval_dirs.keys() & ctx.ranking_dirs.keys(), default=None)
    if seed is None:
        raise StageSkipped("needs a retrieval and a ranking model artifact from this run")
    return file_keys(
        "export", call_with_context(find_stage_function("export"), _available(ctx, seed, ctx.work / "export"))
    )


def run_campaign(ctx: Context) -> dict:
    """complementary_items and audiences on a time split (components.export.campaign_eval.campaign_bench): the
    run's own models where its features are time-split (Taobao), else a time split and models of their own."""
    ctx.require("extracted_dir", "features_dir")
    module = _import("components.export.campaign_eval")
    seed = min(ctx.retrieval_dirs.keys() & ctx.ranking_dirs.keys(), default=None)
    result = module.campaign_bench(
        ctx.extracted_dir,
        ctx.features_dir,
        ctx.work / "campaign",
        ctx.retrieval_dirs.get(seed),
        ctx.ranking_dirs.get(seed),
        **ctx.settings("campaign"),
    )
    ctx.notes.extend(result.pop("notes", []))
    return result


def run_experiments(ctx: Context) -> dict:
    """experiments_bench (the off-policy evaluation task's entry) with the run's first pair of models."""
    function = find_stage_function("experiments")
    seed = min(ctx.retrieval_dirs.keys() & ctx.ranking_dirs.keys(), default=0)
    return file_keys("experiments", call_with_context(function, _available(ctx, seed, ctx.work / "experiments")))
