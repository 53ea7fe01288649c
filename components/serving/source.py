"""Where the server's model comes from: AIP_STORAGE_URI, a local folder or gs://, read through tf.io.gfile.

The URI names either one serving model folder (serving.json inside, what Vertex AI hands a container) or a
folder of them with LATEST.json naming the current one (a local registry's serving/ folder, which `make serve`
follows). Each version is copied into a private local snapshot before it is loaded, the same way for both
schemes, so the folder may change under a running server (a new blessing) without a load ever reading parts of
two versions.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from components import schema
from components.serving import bundle


class ModelSource:
    def __init__(self, uri: str, cache_dir: str | Path | None = None):
        if not uri:
            raise ValueError("no model: set AIP_STORAGE_URI (or --model) to a serving model folder or a registry")
        self.uri = uri.rstrip("/")
        self._cache = Path(cache_dir or tempfile.mkdtemp(prefix="serving-models-"))
        self._cache.mkdir(parents=True, exist_ok=True)

    def current_version(self) -> str:
        """The version the URI serves now: LATEST.json's, else serving.json's; cheap enough to poll."""
        from tensorflow.io import gfile

        for name in (bundle.LATEST, bundle.CONFIG):
            path = f"{self.uri}/{name}"
            if gfile.exists(path):
                return _version(path)
        raise schema.SchemaError(
            f"{self.uri}: neither {bundle.LATEST} nor {bundle.CONFIG}; not a serving model "
            "folder or registry (is the blessed run finished?)"
        )

    def fetch(self, version: str) -> Path:
        """A private local copy of `version`'s folder, checked to be that version (and complete: serving.json)."""
        from tensorflow.io import gfile

        if not version or "/" in version or version.startswith("."):
            raise schema.SchemaError(f"{self.uri}: invalid model version {version!r}")
        folder = f"{self.uri}/{version}" if gfile.exists(f"{self.uri}/{bundle.LATEST}") else self.uri
        snapshot = Path(tempfile.mkdtemp(prefix="model-", dir=self._cache))
        try:
            _copy_tree(folder, snapshot)
            got = _version(str(snapshot / bundle.CONFIG)) if (snapshot / bundle.CONFIG).exists() else None
            if got != version:
                raise schema.SchemaError(
                    f"{folder}: expected a complete serving model {version!r}, copied "
                    f"{got!r} (the folder changed during the copy, or lacks {bundle.CONFIG})"
                )
        except BaseException:
            shutil.rmtree(snapshot, ignore_errors=True)
            raise
        return snapshot

    def close(self) -> None:
        shutil.rmtree(self._cache, ignore_errors=True)


def _version(path: str) -> str:
    from tensorflow.io import gfile

    try:
        with gfile.GFile(path) as handle:
            record = json.loads(handle.read())
        return str(record.get("version") or record["model_version"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise schema.SchemaError(f"{path}: no model version in it ({err})") from err


def _copy_tree(source: str, target: Path) -> None:
    from tensorflow.io import gfile

    for root, _, files in gfile.walk(source):
        relative = root[len(source) :].lstrip("/")
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            gfile.copy(f"{root.rstrip('/')}/{name}", str(target / relative / name), overwrite=True)
