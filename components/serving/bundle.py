"""The serving model: one self-contained folder that the prediction server loads, built in the DAG's blessed branch.

Vertex AI hands a registered model's folder to its container (AIP_STORAGE_URI), so everything a request needs is
in it: the blessed model pair, the last blessed pair before it (the A/B control arm, as in the export), every
user's stored history exactly as the export reads it, today's catalogue (availability; popularity for the
fallback) and the settings that make a served list the exported one (top_k, the export depth N, the experiment).

  treatment/{retrieval,ranking}/   the blessed model pair (stage artifacts, copied whole)
  control/{retrieval,ranking}/     the last blessed pair before it; absent on a first blessing (both arms serve
                                   treatment, as in the export)
  users.parquet                    user_id, hist_items, seen_items: item indices of today's vocabulary; hist_types,
                                   hist_gaps beside hist_items, last_ts: the last step's time (schema.py)
  catalogue.parquet                item_index, item_id, available, popularity
  serving.json                     settings and versions; written last, so a folder without it is incomplete

Locally, the register step keeps each one under `<registry>/serving/<version>/` with `LATEST.json` naming the
current one (`publish`); `make serve` points the server at that folder and follows LATEST.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components import atomic, schema
from components.export.inputs import ServingInputs

CONFIG = "serving.json"
USERS = "users.parquet"
CATALOGUE = "catalogue.parquet"
TREATMENT, CONTROL = "treatment", "control"
LATEST = "LATEST.json"
SERVING = "serving"  # the folder of serving models inside a local registry
# 2: users.parquet holds each step's event types and gap and the last step's time, serving.json the request time
# as_of; a folder of version 1 is refused (rebuild it from its run's features and models).
FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    model_version: str
    top_k: int  # the list length of the export (and the default k of a request)
    candidates_n: int  # the export depth N: retrieval candidates re-ranked; the largest k a request may ask
    experiment: str
    treatment_ratio: float
    max_len: int  # history steps the models read
    control_version: str | None  # None: no earlier blessed model, both arms serve treatment
    built_at: str
    as_of: int = 0  # the stored lists' request time, seconds since the epoch (ServingInputs.as_of)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if not self.model_version:
            raise ValueError("model_version must be non-empty")
        if not 1 <= self.top_k <= self.candidates_n:
            raise ValueError(f"top_k ({self.top_k}) must be in 1..candidates_n ({self.candidates_n})")
        if not 0.0 <= self.treatment_ratio <= 1.0:
            raise ValueError(f"treatment_ratio must be in [0, 1], got {self.treatment_ratio}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be positive, got {self.max_len}")


@dataclasses.dataclass(frozen=True)
class ServingBundle:
    path: Path
    config: ServingConfig
    inputs: ServingInputs

    def model_dirs(self, arm: str) -> tuple[Path, Path] | None:
        """(retrieval_dir, ranking_dir) of an arm; None for a control arm that does not exist."""
        if arm == CONTROL and self.config.control_version is None:
            return None
        return self.path / arm / "retrieval", self.path / arm / "ranking"


def build_serving_model(
    features_dir: str | Path,
    retrieval_dir: str | Path,
    ranking_dir: str | Path,
    output_dir: str | Path,
    *,
    model_version: str,
    top_k: int,
    candidates_n: int,
    experiment: str,
    treatment_ratio: float,
    control: dict | None = None,
) -> ServingConfig:
    """Writes the folder through atomic.staged_directory (serving.json last).

    control: the evaluation summary's previous_blessed ({"version", "retrieval_dir", "ranking_dir"}) or None.
    """
    from components.export.inputs import read_serving_inputs

    inputs = read_serving_inputs(features_dir)
    config = ServingConfig(
        model_version=model_version,
        top_k=int(top_k),
        candidates_n=int(candidates_n),
        experiment=experiment,
        treatment_ratio=float(treatment_ratio),
        max_len=int(inputs.hist_items.shape[1]),
        control_version=control["version"] if control else None,
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(),
        as_of=inputs.as_of,
    )
    with atomic.staged_directory(output_dir, last=CONFIG) as staging:
        pairs = [(TREATMENT, retrieval_dir, ranking_dir)]
        if control:
            pairs.append((CONTROL, control["retrieval_dir"], control["ranking_dir"]))
        for arm, retrieval, ranking in pairs:
            shutil.copytree(retrieval, staging / arm / "retrieval")
            shutil.copytree(ranking, staging / arm / "ranking")
        write_inputs(staging, inputs)
        atomic.write_json(staging / CONFIG, dataclasses.asdict(config))
    return config


def write_inputs(directory: Path, inputs: ServingInputs) -> None:
    """users.parquet and catalogue.parquet: the export's view of every user and of the catalogue."""
    pad = schema.PAD_INDEX
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(list(inputs.user_ids), pa.string()),
                "hist_items": pa.array([row[row != pad].tolist() for row in inputs.hist_items], pa.list_(pa.int64())),
                "seen_items": pa.array(
                    [np.asarray(s, np.int64).tolist() for s in inputs.seen_items], pa.list_(pa.int64())
                ),
                **{
                    name: pa.array(
                        [row[items != pad].tolist() for row, items in zip(values, inputs.hist_items)],
                        pa.list_(pa.int64()),
                    )
                    for name, values in (("hist_types", inputs.hist_types), ("hist_gaps", inputs.hist_gaps))
                },
                "last_ts": pa.array(inputs.last_ts, pa.int64()),
            }
        ),
        directory / USERS,
    )
    index = np.arange(schema.NUM_RESERVED, len(inputs.item_ids), dtype=np.int64)
    pq.write_table(
        pa.table(
            {
                "item_index": index,
                "item_id": pa.array(list(inputs.item_ids[index]), pa.string()),
                "available": inputs.available[index],
                "popularity": inputs.popularity[index].astype(np.float64),
            }
        ),
        directory / CATALOGUE,
    )


def read_serving_model(path: str | Path) -> ServingBundle:
    """The folder's settings and inputs (models are loaded by the predictor); SchemaError names what is wrong."""
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise schema.SchemaError(f"{path}: no {CONFIG}; is this a serving model folder (or an incomplete one)?")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise schema.SchemaError(f"{config_path}: {err}") from err
    version = raw.get("format_version", 1) if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        hint = " (version 1 stores no event types or times: rebuild the serving model)" if version == 1 else ""
        raise schema.SchemaError(f"{config_path}: format_version {version}, this server reads {FORMAT_VERSION}{hint}")
    try:
        config = ServingConfig(**raw)
    except (TypeError, ValueError) as err:
        raise schema.SchemaError(f"{config_path}: {err}") from err
    bundle = ServingBundle(path=path, config=config, inputs=read_inputs(path, config.max_len, config.as_of))
    for arm in (TREATMENT, CONTROL):
        for part in bundle.model_dirs(arm) or ():
            if not part.is_dir():
                raise schema.SchemaError(f"{path}: {arm} model folder {part.name}/ is missing")
    return bundle


def read_inputs(path: Path, max_len: int, as_of: int) -> ServingInputs:
    """users.parquet and catalogue.parquet back into the export's ServingInputs, checked against the catalogue."""
    from components.features.reader import pad_left

    for name in (USERS, CATALOGUE):
        if not (path / name).is_file():
            raise schema.SchemaError(f"{path}: no {name}")
    catalogue = pq.read_table(path / CATALOGUE)
    index = catalogue.column("item_index").to_numpy()
    num_items = len(index) + schema.NUM_RESERVED
    if not np.array_equal(index, np.arange(schema.NUM_RESERVED, num_items)):
        raise schema.SchemaError(f"{path / CATALOGUE}: item_index must run {schema.NUM_RESERVED}.. in order")
    item_ids = np.full(num_items, "", dtype=object)
    item_ids[index] = np.asarray(catalogue.column("item_id").to_pylist(), dtype=object)
    available = np.zeros(num_items, dtype=bool)
    available[index] = catalogue.column("available").to_numpy(zero_copy_only=False)
    popularity = np.zeros(num_items, dtype=np.float64)
    popularity[index] = catalogue.column("popularity").to_numpy()
    users = pq.read_table(path / USERS)
    histories = [np.asarray(h, np.int64) for h in users.column("hist_items").to_pylist()]
    seen = [np.asarray(s, np.int64) for s in users.column("seen_items").to_pylist()]
    for name, rows in (("hist_items", histories), ("seen_items", seen)):
        if any(len(r) and (r.min() < 0 or r.max() >= num_items) for r in rows):
            raise schema.SchemaError(f"{path / USERS}: {name} hold indices outside the catalogue [0, {num_items})")
    steps = {
        name: [np.asarray(v, np.int64) for v in users.column(name).to_pylist()] for name in ("hist_types", "hist_gaps")
    }
    for name, rows in steps.items():
        if [len(r) for r in rows] != [len(h) for h in histories]:
            raise schema.SchemaError(f"{path / USERS}: {name} differ in length from hist_items")
    return ServingInputs(
        user_ids=np.asarray(users.column("user_id").to_pylist(), dtype=object),
        hist_items=pad_left(histories, max_len),
        seen_items=seen,
        item_ids=item_ids,
        available=available,
        popularity=popularity,
        hist_types=pad_left(steps["hist_types"], max_len),
        hist_gaps=pad_left(steps["hist_gaps"], max_len, fill=schema.NO_GAP),
        last_ts=users.column("last_ts").to_numpy().astype(np.int64),
        as_of=int(as_of),
    )


def publish(bundle_dir: str | Path, registry_dir: str | Path, version: str) -> Path:
    """Copies a serving model into `<registry>/serving/<version>/` and points LATEST.json at it (after the copy)."""
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"invalid model version {version!r}")
    root = Path(registry_dir, SERVING)
    final = root / version
    with atomic.staged_directory(final, last=CONFIG) as staging:
        shutil.copytree(bundle_dir, staging, dirs_exist_ok=True)
    atomic.write_json(root / LATEST, {"version": version})
    return final
