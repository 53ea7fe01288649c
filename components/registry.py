"""The local model registry: the last blessed model pair, under the pipeline root.

Layout: <registry>/blessed/<version>/{retrieval/, ranking/, metadata.json} and
<registry>/blessed/LATEST.json naming the current version. Evaluation registers a blessed model (a pending
version: copied, not yet current); export promotes it once its lists are written, so a failed export leaves the
previous model current, and the next run's gate and control arm read that one. Every write goes through
components.atomic (metadata.json last), so a crash never leaves a half-copied model marked as blessed.
In production the Vertex AI Model Registry plays this part.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from components import atomic

BLESSED = "blessed"
LATEST = "LATEST.json"
METADATA = "metadata.json"


class RegistryError(RuntimeError):
    """The registry folder is inconsistent (a pointer to a missing model, a version that exists)."""


@dataclasses.dataclass(frozen=True)
class BlessedModel:
    version: str
    path: Path

    @property
    def retrieval_dir(self) -> Path:
        """The retrieval artifact registered with this model."""
        return self.path / "retrieval"

    @property
    def ranking_dir(self) -> Path:
        """The ranking artifact registered with this model."""
        return self.path / "ranking"

    @property
    def metadata(self) -> dict:
        """What evaluation registered beside the models: gate, metrics, lineage and the data statistics."""
        return json.loads((self.path / METADATA).read_text())

    def to_json(self) -> dict:
        """The model as the evaluation summary's and export manifest's JSON (schema.ModelRef has the same keys)."""
        return {"version": self.version, "retrieval_dir": str(self.retrieval_dir), "ranking_dir": str(self.ranking_dir)}


def last_blessed(registry_dir: str | Path) -> BlessedModel | None:
    """The current blessed model, or None when nothing was ever blessed."""
    pointer = Path(registry_dir, BLESSED, LATEST)
    if not pointer.exists():
        return None
    try:
        version = json.loads(pointer.read_text())["version"]
    except (json.JSONDecodeError, KeyError) as err:
        raise RegistryError(f"{pointer}: unreadable pointer ({err})") from err
    model = BlessedModel(version=version, path=Path(registry_dir, BLESSED, version))
    for part in (model.retrieval_dir, model.ranking_dir, model.path / METADATA):
        if not part.exists():
            raise RegistryError(f"{pointer} names version {version!r} but {part} is missing")
    return model


def register(
    registry_dir: str | Path, version: str, retrieval_dir: str | Path, ranking_dir: str | Path, metadata: dict
) -> BlessedModel:
    """Copies both model artifacts into the registry as a pending version; `promote` makes it the last blessed one."""
    _check_version(version)
    root = Path(registry_dir, BLESSED)
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise RegistryError(f"{final} already exists: model versions must be unique")
    with atomic.staged_directory(final, last=METADATA) as staging:
        shutil.copytree(retrieval_dir, staging / "retrieval")
        shutil.copytree(ranking_dir, staging / "ranking")
        (staging / METADATA).write_text(json.dumps({"version": version, **metadata}, indent=2, default=str))
    return BlessedModel(version=version, path=final)


def promote(registry_dir: str | Path, version: str) -> BlessedModel:
    """Makes a registered version the last blessed model (one atomic write of LATEST.json)."""
    _check_version(version)
    root = Path(registry_dir, BLESSED)
    model = BlessedModel(version=version, path=root / version)
    if not (model.path / METADATA).is_file():
        raise RegistryError(f"cannot promote {version!r}: {model.path} holds no registered model")
    atomic.write_text(root / LATEST, json.dumps({"version": version}))
    return model


def _check_version(version: str) -> None:
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"invalid model version {version!r}")
