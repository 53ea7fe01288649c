"""User-sized scoring as a Beam job over user shards: evaluation's here, export's (components/export/beam_scoring.py)
on the same runner. Beam's DirectRunner engine runs it locally in two worker processes; the features stage's
`beam_args` (components/cloud/dataflow.py) run it on Dataflow.

Why keyed DoFns and not RunInference: a user's list is not one model call but the funnel (retrieval's query
tower, the top N with seen items masked, the ranker's re-rank, the popularity fallback) over two models and a
vocabulary map, and RunInference's TensorFlow handler applies one Keras model to a batch. So a shard of users
is one element, the DoFn loads its model pairs once per worker in setup(), and each shard runs the very functions
the in-process path runs (scoring.score_model, scoring.score_baseline): that is what keeps the two equal.

The driver writes each shard's inputs (contiguous rows of the test split) as an .npz into a work folder (under
--temp_location on Dataflow, so the workers reach it), the job turns each into a result .npz, and the driver reads
the results back in shard order and deletes the folder.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

from components import metrics
from components.evaluation import scoring
from components.features import pipeline as features_pipeline
from components.serving import funnel, models

SCORING_MODES = ("in_process", "beam")  # the pipeline's user_scoring parameter
USERS_PER_SHARD = 10_000
MIN_SHARDS = 4  # so that both local workers (and a few Dataflow workers) get work on a small shop


def check_mode(mode: str) -> str:
    """The user_scoring parameter, refused with the choices when it is neither."""
    if mode not in SCORING_MODES:
        raise ValueError(f"user_scoring {mode!r}: expected one of {SCORING_MODES}")
    return mode


def shard_bounds(users: int, users_per_shard: int = USERS_PER_SHARD) -> list[tuple[int, int]]:
    """[start, end) row ranges covering `users` rows: at least MIN_SHARDS (when there are that many users)."""
    count = max(min(MIN_SHARDS, users), math.ceil(users / max(users_per_shard, 1)), 1)
    edges = np.linspace(0, users, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def pack_ragged(prefix: str, rows: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """A list of int arrays as two flat arrays (values, offsets), which .npz holds without pickling."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    values = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if len(rows) else np.zeros(0, np.int64)
    return {f"{prefix}.values": values, f"{prefix}.offsets": np.concatenate([[0], np.cumsum(lengths)])}


def unpack_ragged(arrays, prefix: str) -> np.ndarray:
    """The object array of int64 arrays that pack_ragged flattened."""
    values, offsets = arrays[f"{prefix}.values"], arrays[f"{prefix}.offsets"]
    out = np.empty(len(offsets) - 1, dtype=object)
    out[:] = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return out


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Through Beam's FileSystems, so `path` may be local or gs://."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with FileSystems.create(path) as handle:
        handle.write(buffer.getvalue())


def read_npz(path: str) -> dict[str, np.ndarray]:
    with FileSystems.open(path) as handle:
        with np.load(io.BytesIO(handle.read()), allow_pickle=False) as loaded:
            return {name: loaded[name] for name in loaded.files}


def local_folder(path: str) -> str:
    """A model folder as a local path: itself when it is one, else (a worker on Dataflow, where Vertex's /gcs/
    mount is absent) a copy of its gs:// twin in a temporary folder."""
    if os.path.isdir(path):
        return path
    target = tempfile.mkdtemp(prefix="model-")
    copy_folder(features_pipeline.beam_path(path), target)
    return target


def copy_folder(source: str, target: str) -> None:
    """Every file under `source` (any Beam filesystem) into the local folder `target`, keeping relative paths."""
    root = source.rstrip("/") + "/"
    found = FileSystems.match([root + "**"])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"{source}: no files to copy (is this a model artifact folder?)")
    for meta in found:
        relative = meta.path[len(root) :]
        destination = os.path.join(target, relative)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with FileSystems.open(meta.path) as reader, open(destination, "wb") as writer:
            shutil.copyfileobj(reader, writer)


class ShardDoFn(beam.DoFn):
    """Reads one shard's inputs, scores them (`score`, defined by each stage), writes the results beside them."""

    def score(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def process(self, path: str):
        result = self.score(read_npz(path))
        out = path.replace("/in-", "/out-")
        write_npz(out, result)
        yield out


def run_shards(shards: list[dict[str, np.ndarray]], dofn: ShardDoFn, beam_args: list[str], name: str) -> list[dict]:
    """Writes each shard's inputs, runs `dofn` over them as one Beam job (the local engine with two worker
    processes unless beam_args name a runner), returns each shard's results in shard order."""
    options = features_pipeline.pipeline_options(beam_args)
    temp = options.view_as(GoogleCloudOptions).temp_location
    work = FileSystems.join(temp, f"{name}-{uuid.uuid4().hex[:8]}") if temp else tempfile.mkdtemp(prefix=f"{name}-")
    try:
        inputs = [FileSystems.join(work, f"in-{index:05d}.npz") for index in range(len(shards))]
        for path, arrays in zip(inputs, shards):
            write_npz(path, arrays)
        named = options.view_as(StandardOptions).runner
        with beam.Pipeline(runner=None if named else features_pipeline.local_runner(options), options=options) as p:
            _ = p | "Shards" >> beam.Create(inputs) | "Spread" >> beam.Reshuffle() | "Score" >> beam.ParDo(dofn)
        return [read_npz(path.replace("/in-", "/out-")) for path in inputs]
    finally:
        if temp:
            found = FileSystems.match([FileSystems.join(work, "*")])[0].metadata_list
            if found:
                FileSystems.delete([m.path for m in found])
        else:
            shutil.rmtree(work, ignore_errors=True)


ModelSpec = tuple[str, str, str]  # (retrieval folder, ranking folder, version) of one model pair


class ScoreEvaluationShard(ShardDoFn):
    """Every model pair and baseline of an evaluation on one shard of test users."""

    def __init__(
        self,
        model_specs: dict[str, ModelSpec],
        baselines: dict[str, object],
        today_item_ids: np.ndarray,
        popularity: np.ndarray,
        candidates_n: int,
        memory_budget_mb: float,
        load_models: Callable[..., models.ServingModel],
    ):
        self.model_specs, self.baselines = model_specs, baselines
        self.today_item_ids, self.popularity = today_item_ids, popularity
        self.candidates_n, self.memory_budget_mb, self.load_models = candidates_n, memory_budget_mb, load_models

    def setup(self):
        self.models = {
            name: self.load_models(local_folder(retrieval), local_folder(ranking), version)
            for name, (retrieval, ranking, version) in self.model_specs.items()
        }

    def score(self, arrays):
        hist_items, seen = unpack_ragged(arrays, "hist_items"), unpack_ragged(arrays, "seen_items")
        out: dict[str, np.ndarray] = {}
        for name, model in self.models.items():
            scores = scoring.score_model(
                model,
                arrays["hist_matrix"],
                seen,
                arrays["targets"],
                self.today_item_ids,
                self.popularity,
                self.candidates_n,
                self.memory_budget_mb,
                funnel.Behaviour(arrays["hist_types"], arrays["hist_gaps"], arrays["request_gap"]),
            )
            out.update(model_arrays(name, scores))
        for name, baseline in self.baselines.items():
            found = scoring.score_baseline(baseline, hist_items, seen, arrays["targets"])
            out.update(_ranks_arrays(f"baseline.{name}", found.ranks))
            out[f"baseline.{name}.lists"] = found.lists
        return out


def model_arrays(name: str, scores: scoring.ModelScores) -> dict[str, np.ndarray]:
    """ModelScores as flat named arrays (an .npz's layout); model_scores reads them back."""
    out = _ranks_arrays(f"{name}.retrieval", scores.retrieval)
    for n, ranks in scores.funnel_by_n.items():
        out.update(_ranks_arrays(f"{name}.funnel.{n}", ranks))
    out[f"{name}.retrieval_lists"] = scores.retrieval_lists
    out[f"{name}.funnel_lists"] = scores.funnel_lists
    return out


def _ranks_arrays(prefix: str, ranks: metrics.Ranks) -> dict[str, np.ndarray]:
    return {f"{prefix}.higher": ranks.higher, f"{prefix}.ties": ranks.ties}


def _ranks(parts: list[dict], prefix: str) -> metrics.Ranks:
    return metrics.Ranks.concatenate([metrics.Ranks(p[f"{prefix}.higher"], p[f"{prefix}.ties"]) for p in parts])


def _lists(parts: list[dict], key: str) -> np.ndarray:
    return scoring.stack_lists([p[key] for p in parts])


def model_scores(parts: list[dict], name: str) -> scoring.ModelScores:
    """One model's ModelScores over every shard, in shard order."""
    depths = sorted({int(key.split(".")[-2]) for key in parts[0] if key.startswith(f"{name}.funnel.")})
    return scoring.ModelScores(
        retrieval=_ranks(parts, f"{name}.retrieval"),
        funnel_by_n={n: _ranks(parts, f"{name}.funnel.{n}") for n in depths},
        retrieval_lists=_lists(parts, f"{name}.retrieval_lists"),
        funnel_lists=_lists(parts, f"{name}.funnel_lists"),
    )


def score_split(
    split,
    model_specs: dict[str, ModelSpec],
    baselines: dict[str, object],
    candidates_n: int,
    memory_budget_mb: float,
    load_models: Callable[..., models.ServingModel],
    beam_args: list[str],
    users_per_shard: int = USERS_PER_SHARD,
) -> tuple[dict[str, scoring.ModelScores], dict[str, scoring.BaselineScores]]:
    """What the in-process evaluation computes for each model pair (scoring.score_model) and baseline
    (scoring.score_baseline) on `split` (data.TestSplit), computed shard by shard on Beam workers."""
    shards = []
    for start, end in shard_bounds(len(split), users_per_shard):
        rows = slice(start, end)
        shards.append(
            {
                "hist_matrix": split.hist_matrix[rows],
                "hist_types": split.behaviour.types[rows],
                "hist_gaps": split.behaviour.gaps[rows],
                "request_gap": split.behaviour.request_gap[rows],
                "targets": split.targets[rows],
                **pack_ragged("hist_items", split.hist_items[rows]),
                **pack_ragged("seen_items", split.seen_items[rows]),
            }
        )
    dofn = ScoreEvaluationShard(
        model_specs, baselines, split.item_ids, split.popularity, candidates_n, memory_budget_mb, load_models
    )
    parts = run_shards(shards, dofn, beam_args, "evaluation-scoring")
    scores = {name: model_scores(parts, name) for name in model_specs}
    baseline_scores = {
        name: scoring.BaselineScores(
            ranks=_ranks(parts, f"baseline.{name}"), lists=_lists(parts, f"baseline.{name}.lists")
        )
        for name in baselines
    }
    return scores, baseline_scores
