"""Atomic writes: a stage's output appears whole or not at all.

Every artifact is built under a temporary sibling name and renamed into place, so a crash or a
kill mid-write never leaves a file or folder that looks finished. Temporary names start with a
dot, so readers that list a folder skip them.

On Cloud Storage FUSE (Vertex AI mounts the pipeline root at /gcs/<bucket>/...) a folder cannot be
renamed (gcsfuse refuses unless mounted with --rename-dir-limit), but a file rename gives a whole
object. There a staged folder is moved in file by file, the one marking completion (a manifest) last.

A writer that is killed (SIGKILL, or a SIGTERM the process does not handle) cannot remove its staging folder;
the next write of the same target (a retry) does, and a SIGTERM during the block ends it as an exception, so the
staging folder goes with it. Each artifact has one writer, so a staging folder of its target is a dead one's.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GCS_FUSE_ROOT = ("/", "gcs")


def on_gcs_fuse(path: str | Path) -> bool:
    """True for a path under Vertex AI's Cloud Storage FUSE mount, /gcs/<bucket>/..."""
    parts = Path(path).parts
    return len(parts) > 2 and parts[:2] == GCS_FUSE_ROOT


@contextmanager
def staged_directory(target: str | Path, last: str | None = None) -> Iterator[Path]:
    """Yields an empty sibling folder; when the block succeeds it replaces `target` whole, else it is removed.

    `last` names the file (relative to the folder) whose presence says the folder is complete: on GCS FUSE,
    where the folder's files are renamed into place one by one, it is moved after all the others.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.staging-"
    for stale in target.parent.glob(glob.escape(prefix) + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; artifacts are read by other tasks and users
    try:
        with _sigterm_as_exit():
            yield staging
            files = _files_marker_last(staging, target, last)  # checked here too: local runs catch a missing marker
            if on_gcs_fuse(target):
                _move_files(staging, target, files)
            else:
                _remove(target)
                os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM (a cancelled or timed-out task) raises SystemExit, so cleanup runs; only where
    nothing else handles SIGTERM, and only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _files_marker_last(staging: Path, target: Path, last: str | None) -> list[Path]:
    """The staged files, relative to `staging`, with `last` at the end."""
    files = sorted(path.relative_to(staging) for path in staging.rglob("*") if path.is_file())
    if last is None:
        return files
    if Path(last) not in files:
        raise FileNotFoundError(f"{target}: the staged folder has no {last}, the file that marks it complete")
    return [path for path in files if path != Path(last)] + [Path(last)]


def _move_files(staging: Path, target: Path, files: list[Path]) -> None:
    """Replaces `target` with the staged `files`, renamed one by one in the order given."""
    _remove(target)
    target.mkdir()
    for relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target / relative)


def write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` through a temporary sibling file and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, payload) -> None:
    """Writes `payload` as indented strict JSON (see strict_json) through write_text."""
    write_text(path, json.dumps(strict_json(payload), indent=2, allow_nan=False))


def strict_json(value):
    """NaN and infinities (a figure a stage could not define) become null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
